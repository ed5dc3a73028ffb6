"""Serving: an OpenAI-compatible HTTP server, a terminal chat and a web chat page.

    minimind-hf serve MODEL_DIR [--host 127.0.0.1] [--port 8998] [--api-key KEY]
    minimind-hf chat MODEL_DIR [--think]
    minimind-hf webui MODEL_DIR [--port 7860]

Needs the ``serve`` extra: ``pip install "minimind-hf[serve]"``.

One module per job:

- ``schemas``   request validation (pydantic) and OpenAI's error body
- ``engine``    one worker thread owns the model; continuous batching, packed chunked prefill, per-request
                sampling and seeds, logprobs, grammars, incremental UTF-8-safe detokenization, stop strings
- ``slots``     the torch forward: the model's modules over a slot-indexed, preallocated KV cache
- ``packed``    its matrix products: fused projections on oneDNN-prepacked weights (CPU)
- ``llama_backend`` the llama.cpp forward on the folder's GGUF (``serve --backend llama.cpp``)
- ``constrained`` llguidance grammars for tool_choice and response_format
- ``sampling``  temperature / top-p / top-k / penalties with a per-request ``torch.Generator``
- ``streaming`` incremental detokenizer and stop-string matcher
- ``parser``    incremental split of generated text into reasoning, content and Hermes tool calls
- ``chat``      load a model folder, render prompts, stream one parsed reply (shared by all front ends)
- ``app``       the FastAPI app (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``) and its
                shutdown; ``routes`` its handlers (cancellation), ``state`` what they share, ``prepare``
                requests -> engine requests (context, sampling, grammars), ``errors`` limits and error bodies
- ``responses`` OpenAI response bodies and SSE chunks from the engine's events (n choices, logprobs)
- ``terminal``  the terminal chat loop; ``webui`` the Gradio page; ``cli`` the commands
"""

# the --dtype choices ("auto": the checkpoint's, but bf16 for a float32 checkpoint on a CPU with bf16
# instructions; see chat.load_model). Here so that the CLI lists them without importing torch.
SERVING_DTYPES = ("auto", "float32", "bfloat16", "float16")
