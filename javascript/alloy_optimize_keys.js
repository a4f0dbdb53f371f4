// Alloy, Optimize tab: the keys of a person's choice between two merges (scorer "human").
// Left/Right arrows pick a side, Down is a tie, "s" skips. Only while the choice buttons are on screen,
// and never while typing in a field.
(function () {
    const KEYS = {ArrowLeft: "left", ArrowRight: "right", ArrowDown: "tie", s: "skip"};

    function root() {
        const app = document.querySelector("gradio-app");
        return (app && app.shadowRoot) || document;
    }

    document.addEventListener("keydown", function (event) {
        const winner = KEYS[event.key];
        if (!winner || event.ctrlKey || event.altKey || event.metaKey) {
            return;
        }
        const target = event.target;
        const typing = target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
        if (typing) {
            return;
        }
        const button = root().querySelector("#alloy_opt_choose_" + winner);
        if (!button || button.offsetParent === null) {  // another tab, or the panel is closed
            return;
        }
        const images = root().querySelectorAll("#alloy_opt_pair_left img");
        if (images.length === 0) {  // no pair shown: nothing to choose
            return;
        }
        event.preventDefault();
        button.click();
    });
})();
