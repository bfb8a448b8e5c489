"""Qwen's tokenizer, loaded by transformers, plus the model's chat template and stop tokens.

transformers' Qwen2Tokenizer reads a model folder as Qwen publishes it: ``tokenizer.json`` when
present, else ``vocab.json`` + ``merges.txt`` (NFC, Qwen2's split regex, byte-level BPE) with the
added tokens of ``tokenizer_config.json``. We name the class rather than ask AutoTokenizer, which
would pick one from ``config.json`` (for Qwen3.5 a class that reads no vocab.json) and could run
code shipped with the model. Our layer adds only what transformers does not do: clear load
errors, the newer ``pretokenize_regex`` setting, stop ids from the generation config, the thinking
mode, and streaming detokenization.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from tokenizers import Regex, pre_tokenizers
from transformers import Qwen2Tokenizer

from mlx_backend.errors import ModelLoadError, RequestError
from mlx_backend.text.chat_template import (
    TEMPLATE_FAILURES,
    THINK_CLOSE,
    THINK_OPEN,
    ChatTemplate,
    ThinkingMode,
    normalize_messages,
    normalize_tools,
    template_errors_as_request_errors,
)
from mlx_backend.text.detokenizer import StreamingDetokenizer, TokenTable

# Every Qwen3 chat turn ends with <|im_end|>; <|endoftext|> ends a document and Qwen3's
# generation_config.json lists both as stop tokens, so we stop on either even without that file.
_ALWAYS_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
_TOKENIZER_JSON = "tokenizer.json"


def _read_json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"The tokenizer file {path.name} in {path.parent} could not be read: {error}") from error
    if not isinstance(value, dict):
        raise ModelLoadError(f"{path.name} in {path.parent} is not a JSON object.")
    return value


def _load_transformers_tokenizer(folder: Path) -> Qwen2Tokenizer:
    # transformers builds an empty tokenizer from a folder without these files instead of failing.
    has_json = (folder / _TOKENIZER_JSON).is_file()
    if not has_json and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise ModelLoadError(f"No tokenizer found in {folder}: it needs tokenizer.json, or vocab.json and merges.txt.")
    try:
        return Qwen2Tokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # tokenizers raises bare Exceptions for malformed files
        broken = _TOKENIZER_JSON if has_json else "vocab.json / merges.txt"
        raise ModelLoadError(f"The tokenizer in {folder} could not be loaded ({broken}): {error}") from error


def _honour_pretokenize_regex(hf: Qwen2Tokenizer, config: Mapping[str, object], folder: Path) -> None:
    """Apply ``tokenizer_config["pretokenize_regex"]`` (Qwen3.5 and later: it adds \\p{M}).

    Qwen2Tokenizer always splits with Qwen2's pattern when it builds from vocab.json, which cuts
    words at combining marks; a tokenizer.json carries its own pattern and is left as it is.
    """
    pattern = config.get("pretokenize_regex")
    if not isinstance(pattern, str) or (folder / _TOKENIZER_JSON).is_file():
        return
    try:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    except Exception as error:  # tokenizers raises a bare Exception for a bad regex
        raise ModelLoadError(f"tokenizer_config.json in {folder} has an invalid pretokenize_regex: {error}") from error
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])


def _check_declared_ids(hf: Qwen2Tokenizer, config: Mapping[str, object], folder: Path) -> None:
    # transformers numbers added tokens after the vocabulary whatever ids tokenizer_config.json
    # declares; the model was trained on the declared ids, so a difference would garble prompts.
    declared = config.get("added_tokens_decoder") or {}
    if not isinstance(declared, Mapping):
        raise ModelLoadError(f"tokenizer_config.json in {folder} has a malformed added_tokens_decoder.")
    for key, entry in declared.items():
        content = entry.get("content") if isinstance(entry, Mapping) else None
        if not isinstance(content, str) or not str(key).isdigit():
            raise ModelLoadError(f"tokenizer_config.json in {folder} has a malformed added token {key!r}.")
        actual = hf.backend_tokenizer.token_to_id(content)
        if actual != int(key):
            raise ModelLoadError(
                f"The tokenizer in {folder} is inconsistent: {content!r} is declared as id {key} "
                f"but the vocabulary gives it id {actual}."
            )


def _eos_ids(folder: Path, hf: Qwen2Tokenizer) -> frozenset[int]:
    ids = {
        token_id
        for content in (hf.eos_token, *_ALWAYS_STOP_TOKENS)
        if content is not None and (token_id := hf.backend_tokenizer.token_to_id(content)) is not None
    }
    # The model's own stop ids (generation_config.json / config.json), when the folder has them.
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.is_file():
            data = _read_json_object(path)
            # Qwen3.5-family config.json keeps it in text_config (the checkpoint is multimodal).
            text_config = data.get("text_config") if isinstance(data.get("text_config"), dict) else {}
            for value in (data.get("eos_token_id"), text_config.get("eos_token_id")):
                values = value if isinstance(value, list) else [value]
                ids.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    if not ids:
        raise ModelLoadError(f"The tokenizer in {folder} has no end-of-turn token (<|im_end|>).")
    return frozenset(ids)


def _chat_template(hf: Qwen2Tokenizer, folder: Path) -> ChatTemplate:
    try:
        # transformers prefers chat_template.jinja over tokenizer_config.json, and picks "default"
        # from the older list of named templates.
        source = hf.get_chat_template()
    except ValueError:
        source = None
    if not isinstance(source, str) or not source.strip():
        raise ModelLoadError(
            f"The model in {folder} has no chat template, so it cannot be used for chat (is it a base model?)."
        )
    return ChatTemplate(source, special_tokens=hf.special_tokens_map)


class Qwen3Tokenizer:
    """Encode/decode text and render chats for one Qwen model folder."""

    def __init__(self, hf: Qwen2Tokenizer, chat_template: ChatTemplate, *, eos_token_ids: frozenset[int]) -> None:
        self._hf = hf
        self._backend = hf.backend_tokenizer
        self.chat_template = chat_template
        self.eos_token_ids = eos_token_ids
        self.think_start_id: Optional[int] = self._backend.token_to_id(THINK_OPEN)
        self.think_end_id: Optional[int] = self._backend.token_to_id(THINK_CLOSE)
        self._table: Optional[TokenTable] = None
        self._vocab_size: Optional[int] = None

    @classmethod
    def from_folder(cls, path: Union[str, Path]) -> "Qwen3Tokenizer":
        folder = Path(path)
        if not folder.is_dir():
            raise ModelLoadError(f"The model folder {folder} does not exist.")
        config_path = folder / "tokenizer_config.json"
        if not config_path.is_file():
            raise ModelLoadError(f"tokenizer_config.json is missing from {folder}.")
        config = _read_json_object(config_path)
        hf = _load_transformers_tokenizer(folder)
        _honour_pretokenize_regex(hf, config, folder)
        _check_declared_ids(hf, config, folder)
        return cls(hf, _chat_template(hf, folder), eos_token_ids=_eos_ids(folder, hf))

    # -- text <-> ids ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; control tokens written in the text (e.g. <|im_start|>) become their ids."""
        if not isinstance(text, str):
            raise RequestError("Only text can be tokenized.")
        return self._hf.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._hf(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def detokenizer(self, *, skip_special_tokens: bool = True) -> StreamingDetokenizer:
        return StreamingDetokenizer(self._token_table, skip_special_tokens=skip_special_tokens)

    @property
    def _token_table(self) -> TokenTable:
        # Built on first use: ~150k entries, only needed once generation starts.
        if self._table is None:
            added = self._hf.added_tokens_decoder
            self._table = TokenTable(
                self._backend.get_vocab(with_added_tokens=False),
                {token_id: token.content for token_id, token in added.items()},
                special_ids=[token_id for token_id, token in added.items() if token.special],
            )
        return self._table

    def token_to_id(self, token: str) -> Optional[int]:
        return self._backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (highest id + 1, added tokens included)."""
        if self._vocab_size is None:
            self._vocab_size = max(self._backend.get_vocab(with_added_tokens=True).values()) + 1
        return self._vocab_size

    # -- chat -----------------------------------------------------------------------------------

    @property
    def thinking_mode(self) -> ThinkingMode:
        return self.chat_template.thinking_mode

    @property
    def thinks_by_default(self) -> bool:
        return self.chat_template.thinks_by_default

    @property
    def soft_switches(self) -> bool:
        """Does the model follow /think and /no_think in a message (Qwen3 hybrid, not Qwen3.5+)?"""
        return self.chat_template.soft_switches

    @property
    def reasoning_efforts(self) -> tuple[str, ...]:
        """The reasoning_effort values the template takes, its default first (empty: none)."""
        return self.chat_template.reasoning_efforts

    @property
    def can_preserve_thinking(self) -> bool:
        return self.chat_template.can_preserve_thinking

    @property
    def preserves_thinking_by_default(self) -> bool:
        return self.chat_template.preserves_thinking_by_default

    @property
    def template_opens_think(self) -> bool:
        """True when the default generation prompt ends inside <think> (Thinking-2507, and the
        Qwen3.5 family when it thinks by default): the model's output then holds only the
        closing </think>. Not "always thinks": that is ``thinking_mode == "always"``."""
        return self.chat_template.opens_think

    def apply_chat_template(
        self,
        messages: Sequence[object],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: Optional[bool] = None,
        tools: Optional[Sequence[Mapping[str, object]]] = None,
        tokenize: bool = True,
        sanitize_control_tokens: bool = False,
        reasoning_effort: Optional[str] = None,
        preserve_thinking: Optional[bool] = None,
    ) -> Union[list[int], str]:
        """Render ``messages`` (dicts or ChatMessage) as the model expects; ids, or text if not ``tokenize``.

        By default control tokens typed inside messages (``<|im_end|>``, ``<think>``...) become
        control ids, as in transformers. ``sanitize_control_tokens=True`` (ids only) is
        transformers' option of that name: they are encoded as plain text, so pasted text cannot
        end a turn or fake a system message. ``reasoning_effort`` / ``preserve_thinking`` reach
        templates that take them (RequestError for a value the template does not take).
        """
        if sanitize_control_tokens and not tokenize:
            raise ValueError("sanitize_control_tokens=True needs tokenize=True: the result only exists as ids.")
        if not tokenize:
            return self.chat_template.render(
                messages,
                add_generation_prompt=add_generation_prompt,
                enable_thinking=enable_thinking,
                tools=tools,
                reasoning_effort=reasoning_effort,
                preserve_thinking=preserve_thinking,
            )
        variables = self.chat_template.variables(enable_thinking, reasoning_effort, preserve_thinking)
        try:
            return self._hf.apply_chat_template(
                normalize_messages(messages),
                tools=normalize_tools(tools),
                chat_template=self.chat_template.source,
                add_generation_prompt=add_generation_prompt,
                tokenize=True,
                return_dict=False,
                sanitize_control_tokens=sanitize_control_tokens,
                **variables,
            )
        except TEMPLATE_FAILURES as error:
            raise template_errors_as_request_errors(error) from error
