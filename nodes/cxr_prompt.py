"""CXR Prompt: the one place the prompt is typed (docs/METHOD.md, "Prompt").

It encodes the text exactly as CLIPTextEncode does and hands on both the
conditioning for the sampler and the regulated prompt for the attention nodes,
so the words they regulate are the words that are sampled. The pairing is
checked again at the start of every sampling run (cxr_core/attention/prompt.py).
"""

from __future__ import annotations

from comfy_api.latest import io

from ..cxr_core.attention.prompt import COND_TEXT_KEY, build_prompt
from ..cxr_core.attention.tokens import parse_word_list
from .sockets import CATEGORY, PromptIO


class CXRPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CXRPrompt",
            display_name="CXR Prompt",
            category=f"{CATEGORY}/attention",
            description="Encodes the positive prompt (as CLIPTextEncode) and marks the words the attention nodes "
            "regulate. Connect its conditioning to the sampler's positive input and its prompt to the gate, "
            "reweight, corrector and capture nodes: the prompt is typed here only.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP (text encoder) of the checkpoint being sampled."),
                io.String.Input(
                    "text",
                    multiline=True,
                    dynamic_prompts=True,
                    default="chest x-ray, left pleural effusion",
                    tooltip="The positive prompt. Weights such as (effusion:1.2) and prompts over 77 tokens work.",
                ),
                io.String.Input(
                    "pathology_words",
                    default="pleural, effusion",
                    tooltip="The finding's words, comma-separated; each must occur in the text (multi-token words "
                    "and repeats work). Read by Pathology Reweight, Energy Latent Corrector and Attention Map Capture.",
                ),
                io.String.Input(
                    "anatomy_words",
                    default="",
                    optional=True,
                    tooltip="word=organ pairs for the gate's anatomy-word gate, e.g. 'heart=heart, "
                    "lungs=left_lung+right_lung'. Empty: no anatomy-word gate.",
                ),
            ],  # fmt: skip
            outputs=[
                io.Conditioning.Output(
                    display_name="conditioning",
                    tooltip="The encoded prompt: connect it to the sampler's positive input.",
                ),
                PromptIO.Output(
                    display_name="prompt",
                    tooltip="The same prompt with its regulated words' token positions, for the attention nodes.",
                ),
            ],
        )

    @classmethod
    def execute(cls, clip, text: str, pathology_words: str, anatomy_words: str = "") -> io.NodeOutput:
        if clip is None or not hasattr(clip, "encode_from_tokens_scheduled"):
            raise ValueError(
                f"CXRPrompt: clip must be a CLIP model (from a checkpoint loader), received {type(clip).__name__}; "
                "if the checkpoint has no text encoder, load one with a CLIP loader"
            )
        if not (text or "").strip():
            raise ValueError(
                "CXRPrompt: text is empty; type the positive prompt, e.g. 'chest x-ray, left pleural effusion'"
            )
        conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        conditioning = [[cond, {**extra, COND_TEXT_KEY: text}] for cond, extra in conditioning]
        try:
            prompt = build_prompt(
                clip, text, conditioning[0][0][:1], parse_word_list(pathology_words), anatomy_words
            )
        except ValueError as e:
            raise ValueError(f"CXRPrompt: {e}") from e
        return io.NodeOutput(conditioning, prompt)


NODES: list[type[io.ComfyNode]] = [CXRPrompt]
