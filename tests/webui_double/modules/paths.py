models_path = ""
script_path = ""
