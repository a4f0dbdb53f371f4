model_loaded_callbacks = []


def on_model_loaded(fn):
    model_loaded_callbacks.append(fn)


def model_loaded_callback(sd_model):
    for fn in list(model_loaded_callbacks):
        fn(sd_model)
