AlwaysVisible = object()


class Script:
    is_img2img = False

    def before_process(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass


reported: list[str] = []  # what errors.report would print: a script's error never ends the run


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.alwayson_scripts = []
        self.inputs = [None]

    def before_process(self, p):
        for s in self.alwayson_scripts:
            try:
                s.before_process(p)
            except Exception as e:
                reported.append(f"Error running before_process: {e}")

    def postprocess(self, p, processed):
        for s in self.alwayson_scripts:
            try:
                s.postprocess(p, processed)
            except Exception as e:
                reported.append(f"Error running postprocess: {e}")


scripts_txt2img = ScriptRunner()
