import sys
import types


class Options:
    def __init__(self):
        self.data = {
            "sd_model_checkpoint": None,
            "outdir_samples": "",
            "outdir_txt2img_samples": "outputs/txt2img",
            "outdir_grids": "",
            "outdir_txt2img_grids": "outputs/grids",
        }

    def __getattr__(self, name):
        try:
            return self.__dict__["data"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        """Like the WebUI: an option set as an attribute goes into the data, with no onchange callback."""
        if name != "data" and name in self.__dict__.get("data", {}):
            self.data[name] = value
        else:
            super().__setattr__(name, value)

    def set(self, key, value, is_api=False, run_callbacks=True):
        """Like the WebUI: the onchange reload runs only when the value changes (and callbacks are asked for)."""
        if self.data.get(key) == value:
            return False
        self.data[key] = value
        if key == "sd_model_checkpoint" and run_callbacks:
            from modules import sd_models

            sd_models.reload_model_weights()
        return True


class State:
    def __init__(self):
        self.interrupted = False
        self.job = ""

    def begin(self, job=""):
        self.interrupted = False
        self.job = job

    def end(self):
        self.job = ""

    def interrupt(self):
        self.interrupted = True


opts = Options()
state = State()
cmd_opts = types.SimpleNamespace(ckpt_dir=None, api_auth=None)


class _SharedModule(types.ModuleType):
    @property
    def sd_model(self):
        from modules import sd_models

        return sd_models.model_data.get_sd_model()


sys.modules[__name__].__class__ = _SharedModule
