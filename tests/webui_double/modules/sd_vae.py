loaded_vae_file = None
