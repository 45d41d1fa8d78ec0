"""The prompt tools' specs: MOVA Prompt Enhance and MOVA Prompt Builder (plain data; nodes in node.py)."""

from __future__ import annotations

from ..spec_types import NodeSpec, Socket, Widget

# Prompt tools (no model weights): an OpenAI-compatible language model writes the caption, or fields make one.
DEFAULT_LLM_URL = "http://localhost:11434/v1"  # Ollama's OpenAI-compatible endpoint


DEFAULT_LLM_MODEL = "qwen2.5vl:7b"


LLM_SEED_MAX = 0x7FFFFFFF  # servers take the seed as a 32-bit integer (llama.cpp: unsigned)


SPEECH_LINES = 3


PROMPT_ENHANCE = NodeSpec(
    node_id="MovaPromptEnhance",
    display_name="MOVA Prompt Enhance",
    description="A language model behind an OpenAI-compatible server (Ollama, LM Studio, llama.cpp's server, "
    "vLLM, or a hosted API) rewrites a short idea into the long caption style MOVA was trained on, true to the "
    "first frame when one is connected (needs a vision model). Same inputs and seed: ComfyUI reuses the last "
    "caption without asking the server again.",
    inputs=(
        Widget("idea", "STRING", default="", multiline=True,
               tooltip="What should happen in the clip, in a few words or a few lines, in any language. Put speech "
               "in double quotes with the exact words, in the language to be spoken: they are kept verbatim. "
               "The output of MOVA Prompt Builder works here too."),
        Widget("base_url", "STRING", default=DEFAULT_LLM_URL,
               tooltip="The server's OpenAI-compatible address (http or https), up to /v1. Ollama: "
               "http://localhost:11434/v1, LM Studio: http://localhost:1234/v1, llama.cpp's llama-server: "
               "http://localhost:8080/v1. Only this machine (localhost, 127.x, ::1) or hosts you list in the "
               "environment variable MOVA_LLM_HOSTS before starting ComfyUI are contacted: a workflow cannot send "
               "your idea, picture or key anywhere else (docs/prompting.md)."),
        Widget("model", "STRING", default=DEFAULT_LLM_MODEL,
               tooltip="The model's name on the server (Ollama: as in 'ollama list'). With an image connected it "
               "must be a vision model (e.g. qwen2.5vl:7b, gemma3:12b). A wrong name lists the server's models."),
        Widget("api_key_env", "STRING", default="",
               tooltip="Leave empty. The API key comes only from the environment variable MOVA_LLM_API_KEY (or the "
               "variable MOVA_LLM_HOSTS names for a host) and goes only to hosts listed in MOVA_LLM_HOSTS. Kept for "
               "old workflows: a name here must be the variable your settings give the host, else the run stops "
               "(the pack never reads a variable a workflow names). Never put a key here: widget values are saved "
               "in workflows and images."),
        Widget("temperature", "FLOAT", default=0.7, min=0.0, max=2.0, step=0.05,
               tooltip="Sampling temperature of the language model: lower keeps closer to the idea, higher "
               "varies more."),
        # control_after_generate: ComfyUI's frontend gives every input named seed this control (and saves its value
        # after the seed's) whether the node asks for it or not.
        Widget("seed", "INT", default=0, min=0, max=LLM_SEED_MAX, control_after_generate=True,
               tooltip="Seed sent to the server (most local servers honour it). Change it for another version of "
               "the caption; the same seed and inputs reuse the last caption without a new request."),
        Widget("max_tokens", "INT", default=2048, min=64, max=65536,
               tooltip="Most tokens the model may write. A caption needs about 500; reasoning models spend more "
               "on thinking first. A reply cut off at this limit is an error."),
        Widget("timeout", "INT", default=300, min=5, max=3600,
               tooltip="Seconds the whole exchange with the server may take (connecting, every request, the "
               "reply), however slowly it answers; Cancel stops it at once. The first request loads the model "
               "into memory, which can take minutes for a large local model."),
        Widget("retry_without_image", "BOOLEAN", default=False,
               tooltip="When the model cannot read images: off stops with an error; on asks again without the "
               "first frame (the caption then follows the idea alone) and says so on the node."),
        Socket("image", "IMAGE", "Optional: the first frame (the one MOVA Conditioning gets), sent to the model as "
               "a PNG (longer side at most 1024 pixels; the first image of a batch) so the caption fits it.",
               optional=True),
    ),
    outputs=(Socket("caption", "STRING", "The caption in MOVA's style, for the text encoder's text input."),),
)


def _speech_widgets(index: int) -> tuple[Widget, ...]:
    return (
        Widget(f"speaker_{index}", "STRING", default="",
               tooltip=f"Speech line {index}: who speaks, as the caption should name them (e.g. 'the woman in the "
               "green raincoat'). Empty with empty words: no line."),
        Widget(f"language_{index}", "STRING", default="",
               tooltip=f"Speech line {index}: the language spoken (e.g. English, French, Mandarin); named in the "
               "audio paragraph. May stay empty."),
        Widget(f"words_{index}", "STRING", default="",
               tooltip=f"Speech line {index}: the exact words, in their own language; quoted verbatim in the "
               "caption. Keep them short enough to say in the clip (about 20 words for 8 s)."),
    )


PROMPT_BUILDER = NodeSpec(
    node_id="MovaPromptBuilder",
    display_name="MOVA Prompt Builder",
    description="Puts a caption together in MOVA's style from fields (no network): the scene, what happens with "
    "the camera and the speech lines quoted verbatim, then the closing paragraph that starts 'The audio shows'. "
    "Use it as the prompt, or as the idea of MOVA Prompt Enhance.",
    inputs=(
        Widget("scene", "STRING", default="", multiline=True,
               tooltip="First paragraph: who and what is in the shot, how they look, where, the light and style. "
               "Written as prose; used as is."),
        Widget("action", "STRING", default="", multiline=True,
               tooltip="What happens over the clip, in order: movements, gestures, expressions. Written as prose; "
               "the speech lines follow it."),
        Widget("camera", "STRING", default="",
               tooltip="The shot and its movement as a phrase, e.g. 'a slow push-in from a medium shot to a "
               "close-up'; written as 'The shot is …'. May stay empty."),
        *(w for i in range(1, SPEECH_LINES + 1) for w in _speech_widgets(i)),
        Widget("music", "STRING", default="",
               tooltip="The music as a phrase, e.g. 'a soft jazz piano that fades out at the end'; written as "
               "'The music is …'. Empty: no music sentence."),
        Widget("effects", "STRING", default="",
               tooltip="Sound effects tied to the action, as a phrase, e.g. 'rain drumming on the awning and a "
               "tram bell'; written as 'The sound effects are …'."),
        Widget("ambience", "STRING", default="",
               tooltip="The background sound, as a phrase, e.g. 'the low hum of evening traffic'; written as "
               "'The ambience is …'."),
    ),
    outputs=(Socket("caption", "STRING", "The caption, for the text encoder's text input or Prompt Enhance's "
                    "idea."),),
)
