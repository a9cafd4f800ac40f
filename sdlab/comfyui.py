"""ComfyUI's ``prompt`` text chunk (its API graph) read into a :class:`~sdlab.spec.GenerationSpec`.

The graph maps node ids to ``{"class_type", "inputs"}``; an input is a value or a link ``[node id, output]``.
Two styles hold the sampling values:

- ``KSampler`` / ``KSamplerAdvanced`` (and look-alikes with ``steps``, ``cfg`` and ``sampler_name``): seed
  (``seed`` or ``noise_seed``), steps, cfg, sampler_name, scheduler, the conditioning and the latent in one node;
- ``SamplerCustomAdvanced``: the seed in a ``RandomNoise`` node, cfg and the conditioning in a ``CFGGuider``
  (``BasicGuider``: no CFG), the sampler in ``KSamplerSelect``, steps and scheduler in ``BasicScheduler``
  (or ``KarrasScheduler``, ``ExponentialScheduler``...); ``SamplerCustom`` holds seed, cfg and conditioning itself.

The image's sampler is the one that starts from an empty latent; any other sampler (a hires or refiner pass) is
named in ``extra``. Prompts are followed through conditioning nodes: ``ConditioningConcat`` is A1111's
``BREAK``, ``ConditioningCombine`` its ``AND`` (which sdlab reads as plain text: reported). Seeds stay whole
(ComfyUI draws 64-bit seeds), the checkpoint's file name is ``model``, and what could not be mapped (a
scheduler sdlab lacks, an area or ControlNet on the prompt, a LoRA) is listed in ``extra["unmapped"]``.
"""
from __future__ import annotations

from typing import Any

from .errors import MetadataError
from .interop import a1111_sampler, build_spec, load_json, model_stem, real, whole
from .spec import GenerationSpec

WHERE = "ComfyUI prompt"
_CUSTOM = ("SamplerCustom", "SamplerCustomAdvanced")
_PRIMITIVE_KEYS = ("value", "seed", "noise_seed", "int", "float", "number", "string", "text")
_SCHEDULER_NODES = {"KarrasScheduler": "karras", "ExponentialScheduler": "exponential",
                    "PolyexponentialScheduler": "polyexponential", "AlignYourStepsScheduler": "align_your_steps",
                    "BetaSamplingScheduler": "beta", "SDTurboScheduler": "sd_turbo", "LaplaceScheduler": "laplace"}
_DEPTH = 64


class _Graph:
    """Links followed safely: a dangling link, a node that is not an object or a cycle gives None, not a crash."""

    def __init__(self, nodes: dict):
        self.nodes = nodes

    def node(self, link: Any) -> tuple[str, str, dict, int] | None:
        """(id, class_type, inputs, output index) of the node ``link`` points to."""
        if not (isinstance(link, list) and len(link) == 2 and str(link[0]) in self.nodes):
            return None
        node = self.nodes[str(link[0])]
        if not isinstance(node, dict):
            return None
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        return str(link[0]), str(node.get("class_type", "?")), inputs, link[1] if isinstance(link[1], int) else 0

    def value(self, inputs: dict, key: str, unmapped: list[str]) -> Any:
        """An input's value, followed through links to the primitive node that holds it (None: absent or unreadable)."""
        value = inputs.get(key)
        for _ in range(_DEPTH):
            if not isinstance(value, list):
                return value
            target = self.node(value)
            held = [k for k in (key, *_PRIMITIVE_KEYS) if target and k in target[2]]
            if not held:
                unmapped.append(f"{key} from node {target[0]} ({target[1]})" if target else f"{key} (a dangling link)")
                return None
            value = target[2][held[0]]
        return None


def _id_order(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _is_sampler(cls: str, inputs: dict) -> bool:
    return cls in _CUSTOM or (cls != "KSamplerSelect" and {"steps", "cfg", "sampler_name"} <= set(inputs)
                              and ("seed" in inputs or "noise_seed" in inputs))


def _latent_source(graph: _Graph, link: Any, samplers: set[str]) -> tuple[str, str | None, list[str]]:
    """Where a sampler's latent comes from: ("empty", node id, path), ("sampler", node id, path) or ("other", ...)."""
    path: list[str] = []
    for _ in range(_DEPTH):
        target = graph.node(link)
        if target is None:
            return "other", None, path
        nid, cls, inputs, _ = target
        if nid in samplers:
            return "sampler", nid, path
        if cls.startswith("Empty") and "width" in inputs and "height" in inputs:
            return "empty", nid, path
        path.append(f"{cls} (node {nid})")
        link = next((inputs[k] for k in ("samples", "latent", "latent_image", "samples_to") if isinstance(inputs.get(k), list)), None)
    return "other", None, path


def _text(graph: _Graph, link: Any, unmapped: list[str], depth: int = 0) -> str:
    """The prompt text a conditioning link carries, every node on the way that sdlab does not reproduce reported."""
    target = graph.node(link)
    if target is None or depth > _DEPTH:
        if link is not None:
            unmapped.append("a prompt behind a dangling or circular link")
        return ""
    nid, cls, inputs, output = target
    if cls == "ConditioningConcat":
        parts = [_text(graph, inputs.get(k), unmapped, depth + 1) for k in ("conditioning_to", "conditioning_from")]
        return " BREAK ".join(p for p in parts if p)
    if cls == "ConditioningCombine":
        parts = [_text(graph, inputs.get(k), unmapped, depth + 1) for k in ("conditioning_1", "conditioning_2")]
        unmapped.append(f"ConditioningCombine (node {nid}) written as A1111's AND, which sdlab encodes as plain text")
        return " AND ".join(p for p in parts if p)
    if cls == "ConditioningZeroOut":
        unmapped.append(f"zeroed conditioning (ConditioningZeroOut, node {nid}) read as an empty prompt")
        return ""
    texts = {k: graph.value(inputs, k, unmapped) for k in ("text", "text_g", "text_l", "clip_l", "clip_g", "t5xxl") if k in inputs}
    texts = {k: str(v) for k, v in texts.items() if v is not None}
    if texts:
        main = texts.get("text", texts.get("text_g", texts.get("t5xxl", texts.get("clip_g", next(iter(texts.values()))))))
        others = {k: v for k, v in texts.items() if v != main}
        if others:
            unmapped.append(f"{cls} (node {nid}) gives its encoders different texts ({', '.join(others)}); "
                            "sdlab sends one prompt to all")
        return main
    for key in ("conditioning", "conditioning_to", "cond", "positive" if output == 0 else "negative"):
        if isinstance(inputs.get(key), list):
            unmapped.append(f"{cls} (node {nid}) on the prompt, not applied")
            return _text(graph, inputs[key], unmapped, depth + 1)
    unmapped.append(f"prompt from node {nid} ({cls}), which sdlab cannot read")
    return ""


def _model(graph: _Graph, link: Any, unmapped: list[str]) -> str | None:
    """The checkpoint a model link comes from (file name without extension); LoRAs and patches on the way reported."""
    for _ in range(_DEPTH):
        target = graph.node(link)
        if target is None:
            return None
        nid, cls, inputs, _ = target
        for key in ("ckpt_name", "unet_name"):
            if isinstance(inputs.get(key), str):
                return model_stem(inputs[key])
        if "lora_name" in inputs:
            unmapped.append(f"LoRA {inputs['lora_name']} (node {nid}, strength {inputs.get('strength_model', 1)})")
        else:
            unmapped.append(f"model patched by {cls} (node {nid})")
        link = inputs.get("model")
    return None


def _held(graph: _Graph, link: Any, key: str, what: str, unmapped: list[str]) -> Any:
    """``key`` of the node ``link`` points to (RandomNoise's noise_seed, KSamplerSelect's sampler_name); another
    kind of node there is reported."""
    target = graph.node(link)
    if target and key in target[2]:
        return graph.value(target[2], key, unmapped)
    if target:
        unmapped.append(f"{what} from {target[1]} (node {target[0]}), which holds no {key}")
    return None


def _sampler_values(graph: _Graph, nid: str, cls: str, inputs: dict, unmapped: list[str]) -> dict:
    """seed, steps, cfg, sampler and scheduler names, denoise, the conditioning and model links of one sampler."""
    v: dict[str, Any] = {"model": inputs.get("model"), "positive": inputs.get("positive"),
                         "negative": inputs.get("negative"), "denoise": graph.value(inputs, "denoise", unmapped)}
    if cls not in _CUSTOM:  # KSampler style
        key = "seed" if "seed" in inputs else "noise_seed"
        v.update(seed=graph.value(inputs, key, unmapped), steps=graph.value(inputs, "steps", unmapped),
                 cfg=graph.value(inputs, "cfg", unmapped), sampler=graph.value(inputs, "sampler_name", unmapped),
                 scheduler=graph.value(inputs, "scheduler", unmapped))
        start, end = inputs.get("start_at_step", 0), inputs.get("end_at_step", 10000)
        if inputs.get("add_noise") == "disable" or start not in (0, None) or (isinstance(end, int) and isinstance(v["steps"], int) and end < v["steps"]):
            unmapped.append(f"{cls} (node {nid}) runs steps {start} to {end} (add_noise {inputs.get('add_noise')}): part of a split")
        return v
    if cls == "SamplerCustom":
        v.update(seed=graph.value(inputs, "noise_seed", unmapped), cfg=graph.value(inputs, "cfg", unmapped))
    if "noise" in inputs:
        v["seed"] = _held(graph, inputs["noise"], "noise_seed", "noise", unmapped)
    guider = graph.node(inputs.get("guider"))
    if guider:
        g = guider[2]
        v["model"] = g.get("model", v["model"])
        if "cfg" in g:
            v.update(cfg=graph.value(g, "cfg", unmapped), positive=g.get("positive"), negative=g.get("negative"))
        elif guider[1] == "BasicGuider":
            v.update(cfg=1.0, positive=g.get("conditioning"), negative=None)
        else:
            unmapped.append(f"guider {guider[1]} (node {guider[0]})")
    v["sampler"] = _held(graph, inputs.get("sampler"), "sampler_name", "sampler", unmapped)
    sigmas = graph.node(inputs.get("sigmas"))
    for _ in range(_DEPTH):
        if sigmas is None or "sigmas" not in sigmas[2]:
            break
        unmapped.append(f"sigmas through {sigmas[1]} (node {sigmas[0]})")
        sigmas = graph.node(sigmas[2]["sigmas"])
    if sigmas:
        s = sigmas[2]
        v["steps"] = graph.value(s, "steps", unmapped)
        v["denoise"] = graph.value(s, "denoise", unmapped) if "denoise" in s else v["denoise"]
        v["model"] = v["model"] or s.get("model")
        if "scheduler" in s:
            v["scheduler"] = graph.value(s, "scheduler", unmapped)
        elif sigmas[1] in _SCHEDULER_NODES:
            v["scheduler"] = _SCHEDULER_NODES[sigmas[1]]
        else:
            unmapped.append(f"sigmas from {sigmas[1]} (node {sigmas[0]})")
    return v


def spec_from_comfyui(prompt_json: str) -> GenerationSpec:
    """Read what maps from a ComfyUI ``prompt`` graph; the rest is named in ``extra['unmapped']``."""
    data = load_json(prompt_json, WHERE)
    graph = _Graph(data)
    nodes = {nid: n for nid, n in data.items() if isinstance(n, dict)}
    samplers = sorted((nid for nid, n in nodes.items()
                       if _is_sampler(str(n.get("class_type", "")), n.get("inputs") if isinstance(n.get("inputs"), dict) else {})),
                      key=_id_order)
    if not samplers:
        raise MetadataError(f"{WHERE}: no sampler node (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced), "
                            "so there is no seed/steps/CFG to read")
    sources = {nid: _latent_source(graph, nodes[nid]["inputs"].get("latent_image"), set(samplers)) for nid in samplers}
    main = next((nid for nid in samplers if sources[nid][0] == "empty"), samplers[0])
    unmapped: list[str] = []
    extra: dict[str, Any] = {}
    for nid in samplers:
        if nid != main:
            kind, origin, path = sources[nid]
            after = f" on node {origin}'s output" if kind == "sampler" else ""
            through = f" through {', '.join(path)}" if path else ""
            unmapped.append(f"a second sampler, {nodes[nid]['class_type']} (node {nid}){after}{through}: "
                            "a hires or refiner pass sdlab does not run")
    cls, inputs = str(nodes[main]["class_type"]), nodes[main]["inputs"]
    v = _sampler_values(graph, main, cls, inputs, unmapped)
    kind, origin, path = sources[main]
    width = height = None
    if kind == "empty":
        latent = graph.node([origin, 0])[2]
        width, height = graph.value(latent, "width", unmapped), graph.value(latent, "height", unmapped)
        batch = graph.value(latent, "batch_size", unmapped)
        if batch not in (None, 1):
            unmapped.append(f"batch_size {batch} (ComfyUI draws one noise tensor for the batch; sdlab's image k uses seed + k)")
    else:
        unmapped.append(f"latent from {', '.join(path) or 'an unknown node'} (an init image not in the graph): size not read")
    if v["denoise"] not in (None, 1, 1.0):
        unmapped.append(f"denoise {v['denoise']} (img2img source not in the graph)")
    sampler = (a1111_sampler(v["sampler"], v.get("scheduler"), unmapped, extra)
               if v.get("sampler") is not None else None)
    if v.get("sampler") is None:
        unmapped.append("sampler name")
    model = _model(graph, v["model"], unmapped)
    if model is None:
        loaders = {model_stem(n["inputs"]["ckpt_name"]) for n in nodes.values()
                   if isinstance(n.get("inputs"), dict) and isinstance(n["inputs"].get("ckpt_name"), str)}
        model = loaders.pop() if len(loaders) == 1 else None
    fields = dict(
        prompt=_text(graph, v["positive"], unmapped), negative_prompt=_text(graph, v["negative"], unmapped),
        seed=whole(v["seed"], f"seed of node {main}", WHERE) if v.get("seed") is not None else None,
        steps=whole(v["steps"], f"steps of node {main}", WHERE) if v.get("steps") is not None else None,
        guidance=real(v["cfg"], f"cfg of node {main}", WHERE) if v.get("cfg") is not None else None,
        sampler=sampler, model=model,
        width=whole(width, "width", WHERE) if width is not None else None,
        height=whole(height, "height", WHERE) if height is not None else None,
    )
    for key, words in (("seed", "seed"), ("steps", "steps"), ("guidance", "cfg")):
        if fields[key] is None:
            unmapped.append(words)
    return build_spec("ComfyUI", fields, extra, unmapped)


# -- the workflow (the UI's graph) ----------------------------------------------------------------
# Widget names in the order ComfyUI's nodes declare them (nodes.py, comfy_extras/nodes_custom_sampler.py): a
# saved workflow keeps only the values (``widgets_values``), in this order. The frontend adds a
# "control_after_generate" value (fixed/increment/decrement/randomize) after a seed widget.
WIDGETS = {
    "KSampler": ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "start_at_step",
                         "end_at_step", "return_with_leftover_noise"),
    "SamplerCustom": ("add_noise", "noise_seed", "cfg"),
    "RandomNoise": ("noise_seed",), "KSamplerSelect": ("sampler_name",), "CFGGuider": ("cfg",),
    "BasicScheduler": ("scheduler", "steps", "denoise"), "SDTurboScheduler": ("steps", "denoise"),
    "KarrasScheduler": ("steps", "sigma_max", "sigma_min", "rho"),
    "ExponentialScheduler": ("steps", "sigma_max", "sigma_min"),
    "PolyexponentialScheduler": ("steps", "sigma_max", "sigma_min", "rho"),
    "AlignYourStepsScheduler": ("model_type", "steps", "denoise"),
    "CLIPTextEncode": ("text",), "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl", "empty_padding"),
    "CLIPTextEncodeSDXL": ("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"),
    "EmptyLatentImage": ("width", "height", "batch_size"), "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "CheckpointLoaderSimple": ("ckpt_name",), "UNETLoader": ("unet_name", "weight_dtype"),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"), "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "PrimitiveNode": ("value",),
}
_SEEDS = ("seed", "noise_seed", "value")
_CONTROL = ("fixed", "increment", "decrement", "randomize")
_MUTED, _BYPASSED = 2, 4  # a node's "mode": never runs / passes its inputs through


def _links(workflow: dict) -> dict[int, tuple[int, int, str]]:
    """link id -> (origin node id, origin slot, type); links are lists (format 0.4) or objects (format 1)."""
    out = {}
    for link in workflow.get("links") or []:
        if isinstance(link, list) and len(link) >= 5:
            out[link[0]] = (link[1], link[2], str(link[5]) if len(link) > 5 else "")
        elif isinstance(link, dict) and "id" in link:
            out[link["id"]] = (link.get("origin_id"), link.get("origin_slot", 0), str(link.get("type", "")))
    return out


def _widget_inputs(cls: str, values: Any) -> dict:
    """A node's widget values by name (unknown classes: by position, ``widget_0``, ...)."""
    if isinstance(values, dict):
        return dict(values)
    names, out, values = WIDGETS.get(cls), {}, list(values or [])
    i = 0
    for position, name in enumerate(names or range(len(values))):
        if i >= len(values):
            break
        key = name if names else f"widget_{position}"
        out[key] = values[i]
        i += 1
        if key in _SEEDS and i < len(values) and values[i] in _CONTROL:
            i += 1  # the frontend's control_after_generate
    return out


def prompt_from_workflow(workflow_json: str) -> tuple[dict, list[str]]:
    """The API graph (``prompt``) a saved workflow describes, and what could not be carried over.

    Widget values are named by :data:`WIDGETS` (other classes' as ``widget_0``, ...: a node the reading
    walks through and cannot read is reported by :func:`spec_from_comfyui`); a linked input becomes
    ``[origin id, slot]``, followed through Reroute and bypassed nodes; muted nodes are left out (they never run).
    """
    data = load_json(workflow_json, "ComfyUI workflow")
    nodes = {n.get("id"): n for n in data.get("nodes") or [] if isinstance(n, dict)}
    if not nodes:
        raise MetadataError("ComfyUI workflow: no nodes, so no sampler and nothing to read")
    links, unmapped = _links(data), []

    def origin(link_id: Any, depth: int = 0) -> list | None:
        found = links.get(link_id)
        if found is None or depth > _DEPTH:
            return None
        node = nodes.get(found[0])
        if node is None:
            return None
        if node.get("type") == "Reroute" or node.get("mode") == _BYPASSED:
            through = [i for i in node.get("inputs") or [] if i.get("link") is not None
                       and (node.get("type") == "Reroute" or str(i.get("type")) == found[2])]
            return origin(through[0]["link"], depth + 1) if through else None
        return [str(found[0]), found[1]]

    prompt = {}
    for nid, node in nodes.items():
        cls = str(node.get("type", "?"))
        if node.get("mode") in (_MUTED, _BYPASSED) or cls in ("Reroute", "Note", "MarkdownNote"):
            continue
        inputs = _widget_inputs(cls, node.get("widgets_values"))
        for given in node.get("inputs") or []:
            if isinstance(given, dict) and given.get("link") is not None:
                link = origin(given["link"])
                if link is not None:
                    inputs[str(given.get("name"))] = link
                else:
                    unmapped.append(f"input {given.get('name')} of {cls} (node {nid}): its link leads to no node that runs")
        prompt[str(nid)] = {"class_type": cls, "inputs": inputs}
    return prompt, unmapped


def spec_from_workflow(workflow_json: str) -> GenerationSpec:
    """Read a saved ComfyUI workflow (a PNG's ``workflow`` chunk without ``prompt``, or a workflow .json) as its
    API graph would be read; ``extra['source']`` says the values came from the workflow's widgets."""
    import json

    prompt, unmapped = prompt_from_workflow(workflow_json)
    try:
        spec = spec_from_comfyui(json.dumps(prompt))
    except MetadataError as exc:
        raise MetadataError(f"ComfyUI workflow (no 'prompt' graph; its widgets read instead): {exc}") from None
    extra = {**spec.extra, "source": "ComfyUI workflow"}
    if unmapped:
        extra["unmapped"] = "; ".join(filter(None, [spec.extra.get("unmapped"), *dict.fromkeys(unmapped)]))
    return spec.replace(extra=extra)
