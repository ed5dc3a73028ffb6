"""Command line for serving: ``serve`` (OpenAI-compatible API), ``chat`` (terminal), ``webui`` (Gradio).

    minimind-hf serve MODEL_DIR [--host 127.0.0.1] [--port 8998] [--api-key KEY]
    minimind-hf chat MODEL_DIR [--think] [--system TEXT]
    minimind-hf webui MODEL_DIR [--host 127.0.0.1] [--port 7860] [--run-tools calculator]

The main ``minimind-hf`` parser (:mod:`minimind_hf.cli`) adds these commands with :func:`add_serve_commands`.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path

from ..cli_logging import add_trust_remote_code_arg
from . import SERVING_DTYPES

logger = logging.getLogger("minimind_hf.serve")

API_KEY_ENV = "MINIMIND_API_KEY"
LLAMA_DEFAULT_CONTEXT = 4096


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a Hugging Face model folder (weights + tokenizer)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=SERVING_DTYPES,
        help="weights' dtype (default auto: the checkpoint's, but bfloat16 for a float32 checkpoint on a CPU "
        "with bf16 instructions, AVX512-BF16 or AMX)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is often faster for tiny models on busy CPUs)",
    )
    p.add_argument("--max-batch-size", type=int, default=16, help="requests decoded together (default 16)")
    p.add_argument(
        "--backend",
        choices=("torch", "llama.cpp"),
        default="torch",
        help="the forward: torch (the model's own modules over a preallocated KV cache) or llama.cpp (the "
        "folder's GGUF export through llama-cpp-python: faster per core on CPUs; same API, "
        "sampling, parsing)",
    )
    p.add_argument(
        "--gguf",
        default=None,
        metavar="FILE",
        help="with --backend llama.cpp: this GGUF file of the same model (default: export MODEL_DIR to a "
        "temporary f16 GGUF at start-up)",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="longest prompt + reply served, at most the model's context (default: the model's context; "
        f"{LLAMA_DEFAULT_CONTEXT} with --backend llama.cpp, whose KV cache is allocated up front per slot)",
    )
    p.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=None,
        metavar="N",
        help="with --backend torch: prompt tokens whose KV cache is kept, so a later prompt that starts the "
        "same way (a chat's history, a shared system prompt) skips them (default 4096; 0: off)",
    )
    p.add_argument(
        "--prefill-chunk",
        type=int,
        default=64,
        help="prompt tokens prefilled between two decoding steps: smaller keeps running streams smoother "
        "while a long prompt arrives, larger prefills it sooner (default 64)",
    )
    add_trust_remote_code_arg(p)


def add_serve_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``serve``, ``chat`` and ``webui`` on a ``minimind-hf`` subparsers object."""
    p = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (/v1/chat/completions, /v1/models)",
        description="Serve MODEL_DIR with an OpenAI-compatible API. Streams with SSE; thinking comes back as "
        "reasoning (and reasoning_content), Hermes tool calls as tool_calls. Binds to localhost unless "
        "--host says otherwise.",
    )
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8998)
    p.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer KEY' on every request (default ${API_KEY_ENV})",
    )
    p.add_argument(
        "--model-name",
        nargs="+",
        default=None,
        metavar="NAME",
        help="model id(s) clients may send; the first is the main one (default: the folder name). E.g. "
        "--model-name minimind minimind-local:latest also answers the original MiniMind's chat_api.py",
    )
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests before answering 503")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=4 * 1024 * 1024,
        help="larger request bodies are refused with 413 before they are read (default 4 MiB)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="default temperature when a request sends none (default: the model's "
        "generation_config, else 1.0)",
    )
    p.add_argument("--top-p", type=float, default=None, help="default top_p when a request sends none")
    p.set_defaults(func=run_serve)

    p = subparsers.add_parser(
        "chat",
        help="chat with a model in the terminal (streaming, /think, /reset)",
        description="Terminal chat with streaming and history. Commands: /think /reset /help /exit.",
    )
    _add_model_args(p)
    _add_generation_args(p)
    p.add_argument(
        "--tools", default=None, metavar="FILE.json", help="OpenAI tools list (JSON) offered to the model"
    )
    _add_run_tools_args(p)
    p.set_defaults(func=run_chat_command)

    p = subparsers.add_parser(
        "webui",
        help="web chat page (Gradio): streaming, folded thinking, tool calls",
        description="A Gradio chat page for MODEL_DIR, on localhost unless --host says otherwise.",
    )
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-tokens", type=int, default=512)
    _add_run_tools_args(p)
    p.set_defaults(func=run_webui)


def _add_run_tools_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run-tools",
        nargs="+",
        default=None,
        metavar="NAME",
        help="tools from minimind_hf.tools (calculator, unit_convert, lookup, current_time, or yours from "
        "--tool-module) that run here when the model calls them; the model then continues",
    )
    p.add_argument(
        "--tool-module",
        default=None,
        metavar="FILE.py",
        help="a Python file whose @minimind_hf.tools.register_tool functions become available to --run-tools",
    )


def _run_tools_arg(args: argparse.Namespace) -> tuple[dict | None, bool]:
    """(the {name: function} tools of --run-tools, ok); not ok after an error was logged."""
    if args.tool_module and not args.run_tools:
        logger.error("--tool-module: name the tools to run with --run-tools NAME ...")
        return None, False
    if not args.run_tools:
        return None, True
    try:
        return _load_run_tools(args.run_tools, args.tool_module), True
    except (KeyError, OSError, ImportError, SyntaxError) as exc:
        logger.error("--run-tools / --tool-module: %s", exc.args[0] if exc.args else exc)
        return None, False


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--think", action="store_true", help="start with thinking on (toggle with /think)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="default: the model's generation_config (MiniMind: 0.85)",
    )
    p.add_argument(
        "--top-p", type=float, default=None, help="default: the model's generation_config (MiniMind: 0.85)"
    )
    p.add_argument("--seed", type=int, default=None)


def _engine(args: argparse.Namespace):
    """The engine on ``args.model_dir``; None (after one logged line) when it cannot be built."""
    import torch

    from .chat import load_model, load_model_info
    from .engine import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.backend == "llama.cpp":  # llama.cpp holds the weights: only the config is read here
            if args.dtype != "auto":
                raise ValueError("--dtype is read by --backend torch only (llama.cpp serves the f16 GGUF)")
            if args.prefix_cache_tokens is not None:
                raise ValueError("--prefix-cache-tokens is read by --backend torch only")
            model, tokenizer = load_model_info(args.model_dir, trust_remote_code=args.trust_remote_code)
        else:
            model, tokenizer = load_model(
                args.model_dir, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
            )
        model_context = int(getattr(model.config, "max_position_embeddings", 2048))
        context = args.max_model_len or model_context
        if args.backend == "llama.cpp" and not args.max_model_len:
            context = min(model_context, LLAMA_DEFAULT_CONTEXT)
        if not 1 < context <= model_context:
            raise ValueError(f"--max-model-len {context}: the model's context is {model_context} tokens")
        if args.gguf and args.backend != "llama.cpp":
            raise ValueError("--gguf is read by --backend llama.cpp only")
        decoder = _llama_decoder(args, context) if args.backend == "llama.cpp" else None
        return Engine(
            model,
            tokenizer,
            max_batch_size=args.max_batch_size,
            max_queue=getattr(args, "max_queue", 256),
            prefill_chunk=args.prefill_chunk,
            context_length=context,
            decoder=decoder,
            prefix_cache_tokens=args.prefix_cache_tokens,
        )
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        # not a model folder, no chat template, remote code refused, no llama.cpp, a bad option
        logger.error("%s", exc)
        return None


def _llama_decoder(args: argparse.Namespace, context: int):
    import tempfile

    import torch

    from .llama_backend import LlamaCppDecoder

    if args.device != "cpu":
        raise ValueError("--backend llama.cpp runs on the CPU here: drop --device")
    gguf = args.gguf
    if gguf is None:
        from ..convert import to_gguf

        # the exported file lives as long as the process (the directory is removed at exit)
        args._gguf_dir = tempfile.TemporaryDirectory(prefix="minimind-serve-")
        logger.info("exporting %s to f16 GGUF for llama.cpp", args.model_dir)
        gguf = to_gguf(args.model_dir, Path(args._gguf_dir.name) / "model-f16.gguf", outtype="f16")
    elif not Path(gguf).is_file():
        raise ValueError(f"--gguf {gguf}: no such file")
    return LlamaCppDecoder(gguf, args.max_batch_size, context, threads=torch.get_num_threads())


def _model_defaults(model) -> tuple[float, float]:
    gc = getattr(model, "generation_config", None)
    if gc is not None and getattr(gc, "do_sample", False):
        return float(gc.temperature or 1.0), float(gc.top_p or 1.0)
    return 1.0, 1.0


def _missing_extra(exc: ImportError) -> int:
    logger.error('%s: install the serving extra with `pip install "minimind-hf[serve]"`', exc)
    return 2


def run_serve(args: argparse.Namespace) -> int:
    try:
        from .app import create_app, run_server
    except ImportError as exc:
        return _missing_extra(exc)

    if not _is_loopback(args.host) and not args.api_key:
        logger.warning(
            "serving on %s without --api-key: anyone who can reach this address can use the model", args.host
        )
    engine = _engine(args)
    if engine is None:
        return 2
    temperature, top_p = _model_defaults(engine.model)
    names = args.model_name or [Path(args.model_dir).resolve().name]
    name = names[0]
    app = create_app(
        engine,
        name,
        aliases=names[1:],
        api_key=args.api_key,
        default_temperature=temperature if args.temperature is None else args.temperature,
        default_top_p=top_p if args.top_p is None else args.top_p,
        max_body_bytes=args.max_body_bytes,
    )
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"Serving {name!r} at http://{host}:{args.port}/v1 (context {engine.context_length} tokens"
        f"{', API key required' if args.api_key else ''})",
        flush=True,
    )
    run_server(
        app, engine, args.host, args.port, log_level="info" if getattr(args, "verbose", False) else "warning"
    )
    return 0


def run_chat_command(args: argparse.Namespace) -> int:
    from .terminal import ChatSettings, run_chat

    tools = None
    if args.tools:
        try:
            tools = json.loads(Path(args.tools).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            logger.error("--tools %s: %s", args.tools, exc)
            return 2
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    run_tools, ok = _run_tools_arg(args)
    if not ok:
        return 2
    engine = _engine(args)
    if engine is None:
        return 2
    with engine:
        temperature, top_p = _model_defaults(engine.model)
        settings = ChatSettings(
            max_tokens=args.max_tokens,
            temperature=temperature if args.temperature is None else args.temperature,
            top_p=top_p if args.top_p is None else args.top_p,
            seed=args.seed,
            system=args.system,
            tools=tools,
            thinking=args.think,
            color=sys.stdout.isatty(),
            run_tools=run_tools,
        )
        run_chat(engine, settings)
    return 0


def _load_run_tools(names: list[str], module: str | None) -> dict:
    """{name: function} from the registry, after importing the user's `module` file
    (it registers its tools)."""
    from ..tools import get_tools

    if module:
        import importlib.util

        spec = importlib.util.spec_from_file_location("minimind_user_tools", module)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {module}")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return get_tools(names)


def run_webui(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401

        from .webui import launch
    except ImportError as exc:
        return _missing_extra(exc)

    run_tools, ok = _run_tools_arg(args)
    if not ok:
        return 2
    if not _is_loopback(args.host):
        logger.warning("the web page on %s has no authentication", args.host)
    engine = _engine(args)
    if engine is None:
        return 2
    with engine:
        temperature, top_p = _model_defaults(engine.model)
        launch(
            engine,
            Path(args.model_dir).resolve().name,
            host=args.host,
            port=args.port,
            max_tokens=args.max_tokens,
            block=True,
            temperature=temperature,
            top_p=top_p,
            run_tools=run_tools,
        )
    return 0
