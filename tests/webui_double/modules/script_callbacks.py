model_loaded_callbacks = []


def on_model_loaded(fn):
    model_loaded_callbacks.append(fn)


def model_loaded_callback(sd_model):
    for fn in list(model_loaded_callbacks):
        fn(sd_model)


after_component_callbacks = []
callback_errors = []  # what the WebUI logs ("Error executing callback ...") instead of raising


def on_after_component(fn):
    after_component_callbacks.append(fn)


def after_component_callback(component, **kwargs):
    for fn in list(after_component_callbacks):
        try:
            fn(component, **kwargs)
        except Exception as e:  # noqa: BLE001 - the WebUI reports a failing callback and goes on
            callback_errors.append(f"{type(e).__name__}: {e}")
