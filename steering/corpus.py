"""Offline English text for SAE training: stdlib docstrings, the Zen of Python, and model generations."""

from __future__ import annotations

import codecs
import importlib
import importlib.util
import inspect
import re
import warnings

from .generate import GenerationRequest, generate
from .models import LoadedModel

DOC_MODULES = (
    "abc", "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "getpass",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http", "inspect", "io", "ipaddress",
    "itertools", "json", "locale", "logging", "math", "mimetypes", "operator", "os", "pathlib", "pickle",
    "pprint", "queue", "random", "re", "sched", "secrets", "shelve", "shlex", "shutil", "signal", "socket",
    "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "traceback", "typing", "unittest", "urllib", "uuid", "warnings", "wave", "weakref",
    "zipfile", "zlib",
)

PROMPTS = (
    "Write a short story about a lighthouse keeper.", "Explain how photosynthesis works.",
    "What are the benefits of regular exercise?", "Describe a busy market in the morning.",
    "Give me three tips for learning a new language.", "Why is the sky blue?",
    "Write a polite email asking for a meeting.", "Summarize the history of the printing press.",
    "What makes a good friend?", "Describe the taste of a lemon.", "How do airplanes stay in the air?",
    "Write a poem about the ocean.", "What is machine learning?", "Give advice to a nervous student before an exam.",
    "Describe your favourite season and why.", "Explain the water cycle to a child.",
    "What should I cook for dinner tonight?", "Tell me a joke about computers.", "How do vaccines work?",
    "Write a review of an imaginary restaurant.", "What are black holes?", "Describe a walk in a forest.",
    "How can I save money each month?", "Explain what a database is.", "Write a dialogue between a cat and a dog.",
    "What is the capital of France and what is it known for?", "Describe a thunderstorm.",
    "How do I plant a tomato garden?", "Why do people enjoy music?", "Explain gravity in simple terms.",
    "Write a motivational message for a Monday morning.", "What happened during the Renaissance?",
)


def zen_of_python() -> str:
    """The Zen of Python, decoded from the `this` module without printing it."""
    spec = importlib.util.find_spec("this")
    text = spec.loader.get_source("this") if spec and spec.loader else ""
    match = re.search(r's = """(.*?)"""', text or "", re.S)
    return codecs.decode(match.group(1), "rot13") if match else ""


def stdlib_texts(max_chars: int = 1200) -> list[str]:
    """Docstrings of stdlib modules and their public members, split into paragraphs."""
    texts: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some members warn about their own deprecation when read
        for name in DOC_MODULES:
            texts.extend(_module_paragraphs(name, max_chars))
    return texts


def _module_paragraphs(name: str, max_chars: int) -> list[str]:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return []
    docs = [inspect.getdoc(module) or ""]
    for member_name, member in sorted(vars(module).items()):
        public = not member_name.startswith("_") and (inspect.isfunction(member) or inspect.isclass(member))
        if public and getattr(member, "__module__", None) == name:
            docs.append(inspect.getdoc(member) or "")
    texts: list[str] = []
    for doc in docs:
        for paragraph in re.split(r"\n\s*\n", doc):
            paragraph = " ".join(paragraph.split())
            if len(paragraph) >= 40 and not paragraph.startswith((">>>", "Usage:")):
                texts.append(paragraph[:max_chars])
    return texts


def generated_texts(loaded: LoadedModel, count: int = 24, max_tokens: int = 40) -> list[str]:
    """What the model itself says to `count` varied chat prompts (seeded sampling, all generated together)."""
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=max_tokens,
            temperature=0.8,
            top_p=0.95,
            seed=i,
        )
        for i in range(count)
    ]
    return [result.text for result in generate(loaded, requests) if result.text.strip()]


def training_texts(loaded: LoadedModel | None = None) -> list[str]:
    """The whole offline corpus: Zen, stdlib docstrings, and (with a model) its own generations."""
    texts = [zen_of_python(), *stdlib_texts()]
    if loaded is not None:
        texts.extend(generated_texts(loaded))
    return [text for text in texts if text]
