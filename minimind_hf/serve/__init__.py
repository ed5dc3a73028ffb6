"""Serving: an OpenAI-compatible HTTP server, a terminal chat and a web chat page.

    minimind-hf serve MODEL_DIR [--host 127.0.0.1] [--port 8998] [--api-key KEY]
    minimind-hf chat MODEL_DIR [--think]
    minimind-hf webui MODEL_DIR [--port 7860]

(also ``python -m minimind_hf.serve.cli ...``). Needs the ``serve`` extra: ``pip install "minimind-hf[serve]"``.

One module per job:

- ``schemas``   request validation (pydantic) and OpenAI's error body
- ``engine``    one worker thread owns the model; continuous batching with left padding, per-request
                sampling and seeds, incremental UTF-8-safe detokenization, stop strings
- ``sampling``  temperature / top-p / top-k / penalties with a per-request ``torch.Generator``
- ``streaming`` incremental detokenizer and stop-string matcher
- ``parser``    incremental split of generated text into reasoning, content and Hermes tool calls
- ``chat``      load a model folder, render prompts, stream one parsed reply (shared by all front ends)
- ``app``       the FastAPI app (``/v1/models``, ``/v1/chat/completions`` with SSE)
- ``terminal``  the terminal chat loop; ``webui`` the Gradio page; ``cli`` the commands
"""
