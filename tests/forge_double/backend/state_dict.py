"""Prefix filtering as Forge's backend/state_dict.py does it: the matched keys move out of `sd`."""


def state_dict_has(sd, prefix):
    return any(k.startswith(prefix) for k in sd)


def filter_state_dict_with_prefix(sd, prefix, new_prefix=""):
    moved = {}
    for key in [k for k in sd if k.startswith(prefix)]:
        moved[new_prefix + key[len(prefix) :]] = sd.pop(key)
    return moved


def try_filter_state_dict(sd, prefix_list, new_prefix=""):
    for prefix in prefix_list:
        if state_dict_has(sd, prefix):
            return filter_state_dict_with_prefix(sd, prefix, new_prefix)
    return {}
