"""The conditioning wing's specs: MOVA Text Encode, MOVA Conditioning, MOVA Extend and MOVA Join (plain data;
nodes in node.py)."""

from __future__ import annotations

from ..spec_types import AUDIO_VAE, EXTENSION, MOVA_CONDITIONING, NodeSpec, Socket, Widget

TEXT_ENCODE = NodeSpec(
    node_id="MovaTextEncode",
    display_name="MOVA Text Encode",
    description="Encodes a prompt with UMT5-XXL the way the official MOVA pipeline does: the text is cleaned "
    "(Unicode fixes, HTML entities, runs of whitespace), brackets are plain text (no (emphasis:1.2) weights) and "
    "the prompt is cut at 512 tokens, with a warning on the node when it is longer.",
    inputs=(
        Widget("text", "STRING", default="", multiline=True,
               tooltip="The prompt: prose paragraphs, speech in double quotes as spoken, a last paragraph "
               "\"The audio shows ...\". Brackets are kept as written. At most 512 tokens are read."),
        Socket("clip", "CLIP", "The UMT5-XXL text encoder: Load CLIP with umt5_xxl_fp8_e4m3fn_scaled.safetensors "
               "(or umt5_xxl_fp16), type wan."),
    ),
    outputs=(Socket("conditioning", "CONDITIONING", "The prompt's text states, for MOVA Conditioning."),),
)


CONDITIONING = NodeSpec(
    node_id="MovaConditioning",
    display_name="MOVA Conditioning",
    description="Builds MOVA's image-to-video condition (first frame through the Wan 2.1 VAE) and an "
    "empty joint video+audio latent. Without a start image the first frame is white (text-only recipe).",
    inputs=(
        Socket("positive", "CONDITIONING", "The prompt, from MOVA Text Encode (or CLIP Text Encode) with a umt5_xxl "
               "CLIP loaded as type wan."),
        Socket("negative", "CONDITIONING", "The negative prompt, from MOVA Text Encode (same CLIP)."),
        Socket("vae", "VAE", "The Wan 2.1 VAE (wan_2.1_vae.safetensors) that encodes the first frame."),
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec: its sample rate sets the audio latent length."),
        Widget("width", "INT", default=640, min=16, max=4096, step=16,
               tooltip="Video width in pixels, a multiple of 16 (640 for 360p, 1280 for 720p)."),
        Widget("height", "INT", default=352, min=16, max=4096, step=16,
               tooltip="Video height in pixels, a multiple of 16 (352 for 360p, 720 for 720p)."),
        Widget("length", "INT", default=193, min=1, max=1025, step=4,
               tooltip="Number of frames, 4k+1 (193 frames = about 8 s at 24 fps)."),
        Widget("fps", "FLOAT", default=24.0, min=1.0, max=120.0, step=1.0, round=0.001,
               tooltip="Frames per second. Sets how long the audio is; use the same value in Create Video "
               "(connect the fps output)."),
        Socket("start_image", "IMAGE", "The first frame (resized and centre-cropped to width x height). "
               "Leave empty for text-only generation: a white first frame is used.", optional=True),
        # Added later: appended so that saved workflows keep their widget positions.
        Socket("end_image", "IMAGE", "Optional last frame (first + last frame): the clip ends on it. Fitted like "
               "the start image; the last image of a batch is used. MOVA was not trained for it (it works through "
               "the Wan 2.2 I2V condition its video experts come from).", optional=True),
        Socket("audio", "AUDIO", "Optional sound the video follows (speech -> lip sync, or sound): mixed to mono, "
               "resampled to the audio VAE's rate, cut or padded with silence to the clip's length, and kept as "
               "given. MOVA Audio Decode then returns this sound itself.", optional=True),
        Socket("video", "IMAGE", "Optional video to write a soundtrack for (video -> audio), e.g. Get Video "
               "Components' images: its first `length` frames are kept (fitted to width x height); the error says "
               "which length to use when it is shorter. Not with start_image, end_image or audio.", optional=True),
        Socket("video_fps", "FLOAT", "Optional: the video's frame rate (Get Video Components' fps). It must equal "
               "fps; the node says so when they differ.", optional=True),
    ),
    outputs=(
        Socket("conditioning", MOVA_CONDITIONING, "Prompts + image condition, for the MOVA Sampler."),
        Socket("latent", "LATENT", "Empty joint video+audio latent, for the MOVA Sampler."),
        Socket("fps", "FLOAT", "The fps, to connect to Create Video."),
        Socket("video", "IMAGE", "With a video connected: the frames the clip covers (its first `length` frames, "
               "at their own size), for Create Video with the new soundtrack. Empty otherwise."),
        # Added later: appended so that saved workflows keep their output positions.
        Socket("av_latent", "LATENT", "The same joint latent in ComfyUI's audio-video form (video and audio in one "
               "LATENT, as LTX-2's): for SamplerCustomAdvanced with the MOVA Guider (ComfyUI 0.8 and later)."),
    ),
)


# Longer clips: the next clip continues the last frames and seconds of sound of the clip so far.
EXTEND = NodeSpec(
    node_id="MovaExtend",
    display_name="MOVA Extend",
    description="Sets up the next clip of a longer video: its first `overlap` frames and their sound are the end "
    "of the clip so far (known frames in the I2V condition, kept video and audio latents), the rest follows its "
    "own prompt. Sample it with the MOVA Sampler, decode it, then MOVA Join appends it. Chain Extend + Join for "
    "more clips. MOVA was not trained for this; it uses its architecture as is.",
    inputs=(
        Socket("positive", "CONDITIONING", "The next clip's prompt (CLIP Text Encode with the umt5_xxl CLIP, type wan)."),
        Socket("negative", "CONDITIONING", "The negative prompt (same CLIP)."),
        Socket("vae", "VAE", "The Wan 2.1 VAE (wan_2.1_vae.safetensors) that encodes the overlap frames."),
        Socket("audio_vae", AUDIO_VAE, "MOVA's audio codec: encodes the overlap's sound."),
        Socket("images", "IMAGE", "The clip so far: VAE Decode's frames for the first clip, MOVA Join's images "
               "after that. Its width and height (multiples of 16) are the next clip's."),
        Socket("audio", "AUDIO", "The clip so far's sound: MOVA Audio Decode's audio for the first clip, MOVA Join's "
               "after that (mono, at the audio VAE's rate, as long as the frames)."),
        Widget("length", "INT", default=193, min=5, max=1025, step=4,
               tooltip="Frames of the next clip, 4k+1, overlap included (193 = about 8 s at 24 fps); the video "
               "grows by length - overlap frames."),
        Widget("overlap", "INT", default=17, min=1, max=1021, step=4,
               tooltip="Frames (4k+1) the next clip shares with the end of the clip so far: they and their sound "
               "are given, so motion, voices and ambience carry on. 17 frames = 0.71 s at 24 fps. More gives more "
               "context and less new footage per clip."),
        Widget("fps", "FLOAT", default=24.0, min=1.0, max=120.0, step=1.0, round=0.001,
               tooltip="The video's frame rate: connect MOVA Conditioning's fps. The node checks it against the "
               "clip so far's frames and sound."),
        Widget("crossfade", "FLOAT", default=0.1, min=0.0, max=10.0, step=0.01,
               tooltip="Seconds over which MOVA Join fades from the clip so far's sound into the next clip's, "
               "ending where the new frames start (0: a hard cut). At most the overlap's duration."),
    ),
    outputs=(
        Socket("conditioning", MOVA_CONDITIONING, "The next clip's prompts and condition, for the MOVA Sampler."),
        Socket("latent", "LATENT", "The next clip's joint latent with the overlap kept, for the MOVA Sampler."),
        Socket("extension", EXTENSION, "The clip so far and the overlap, for MOVA Join."),
        # Added later: appended so that saved workflows keep their output positions.
        Socket("av_latent", "LATENT", "The next clip's latent in ComfyUI's audio-video form, the overlap kept through "
               "nested noise masks: for SamplerCustomAdvanced with a MOVA Guider on this node's conditioning "
               "(ComfyUI 0.8 and later)."),
    ),
)


JOIN = NodeSpec(
    node_id="MovaJoin",
    display_name="MOVA Join",
    description="Appends the clip made from MOVA Extend to the clip so far: the overlap frames are dropped (no "
    "repeated frames) and the sound continues, crossfaded over the end of the overlap. Exactly length - overlap "
    "frames are added, and the sound stays as long as the video.",
    inputs=(
        Socket("extension", EXTENSION, "The extension output of the MOVA Extend that set up this clip."),
        Socket("images", "IMAGE", "The new clip's frames (VAE Decode of the MOVA Sampler's video latent)."),
        Socket("audio", "AUDIO", "The new clip's sound (MOVA Audio Decode)."),
    ),
    outputs=(
        Socket("images", "IMAGE", "All frames so far, for Create Video or the next MOVA Extend."),
        Socket("audio", "AUDIO", "The whole sound so far, for Create Video or the next MOVA Extend."),
        Socket("fps", "FLOAT", "The frame rate, for Create Video."),
    ),
)
