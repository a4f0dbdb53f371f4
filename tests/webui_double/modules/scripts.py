AlwaysVisible = object()


class Script:
    is_img2img = False

    def before_process(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptRunner:
    def __init__(self):
        self.scripts = []
        self.alwayson_scripts = []
        self.inputs = [None]

    def before_process(self, p):
        for s in self.alwayson_scripts:
            s.before_process(p)

    def postprocess(self, p, processed):
        for s in self.alwayson_scripts:
            s.postprocess(p, processed)


scripts_txt2img = ScriptRunner()
