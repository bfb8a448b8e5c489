"""Qwen3's tokenizer: byte-level BPE from the `tokenizers` library plus the model's chat template.

A model folder has either ``tokenizer.json`` (the fast tokenizer, used as is) or ``vocab.json`` +
``merges.txt``, from which we build the same pipeline transformers' Qwen2Tokenizer builds: NFC
normalizer, Qwen2's split regex, byte-level BPE, and the added tokens of
``tokenizer_config.json`` with their declared ids. Encoding matches transformers token for token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from mlx_backend.text.chat_template import THINK_CLOSE, THINK_OPEN, ChatTemplate, ThinkingMode, control_token_patterns
from mlx_backend.text.detokenizer import StreamingDetokenizer, TokenTable
from mlx_backend.errors import ModelLoadError, RequestError

# Qwen2/Qwen3's pre-tokenizer split pattern (transformers' Qwen2Tokenizer PRETOKENIZE_REGEX).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Every Qwen3 chat turn ends with <|im_end|>; <|endoftext|> ends a document and Qwen3's
# generation_config.json lists both as stop tokens, so we stop on either even without that file.
_ALWAYS_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
_NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class AddedTokenInfo:
    """One entry of ``added_tokens_decoder`` (tokenizer_config.json)."""

    id: int
    content: str
    special: bool
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False

    def to_added_token(self) -> AddedToken:
        return AddedToken(
            self.content,
            single_word=self.single_word,
            lstrip=self.lstrip,
            rstrip=self.rstrip,
            normalized=self.normalized,
            special=self.special,
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"The tokenizer file {path.name} in {path.parent} could not be read: {error}") from error


def _token_content(value: Any) -> Optional[str]:
    # tokenizer_config.json writes special tokens as a string or as {"content": ...}.
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _parse_added_tokens(config: Mapping[str, Any], folder: Path) -> list[AddedTokenInfo]:
    entries = config.get("added_tokens_decoder") or {}
    if not isinstance(entries, Mapping):
        raise ModelLoadError(f"tokenizer_config.json in {folder} has a malformed added_tokens_decoder.")
    tokens = []
    for key, entry in entries.items():
        try:
            tokens.append(
                AddedTokenInfo(
                    id=int(key),
                    content=str(entry["content"]),
                    special=bool(entry.get("special", False)),
                    lstrip=bool(entry.get("lstrip", False)),
                    rstrip=bool(entry.get("rstrip", False)),
                    single_word=bool(entry.get("single_word", False)),
                    normalized=bool(entry.get("normalized", False)),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelLoadError(f"tokenizer_config.json in {folder} has a malformed added token {key!r}.") from error
    return sorted(tokens, key=lambda token: token.id)


def build_byte_level_bpe(vocab: Mapping[str, int], merges: Sequence[tuple[str, str]]) -> Tokenizer:
    """The Qwen2 tokenizer pipeline around a BPE vocabulary (what transformers builds too)."""
    model = models.BPE(
        vocab=dict(vocab),
        merges=list(merges),
        dropout=None,
        unk_token=None,
        continuing_subword_prefix="",
        end_of_word_suffix="",
        fuse_unk=False,
        byte_fallback=False,
    )
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"The tokenizer file {path.name} in {path.parent} could not be read: {error}") from error
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ModelLoadError(f"merges.txt in {path.parent} is malformed at line {number}.")
        merges.append((parts[0], parts[1]))
    return merges


def _load_backend(folder: Path, added: list[AddedTokenInfo]) -> Tokenizer:
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            backend = Tokenizer.from_file(str(tokenizer_json))
        except Exception as error:  # tokenizers raises a bare Exception for malformed files
            raise ModelLoadError(f"tokenizer.json in {folder} could not be loaded: {error}") from error
    else:
        vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
        if not (vocab_path.is_file() and merges_path.is_file()):
            raise ModelLoadError(
                f"No tokenizer found in {folder}: it needs tokenizer.json, or vocab.json and merges.txt."
            )
        vocab = _read_json(vocab_path)
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            raise ModelLoadError(f"vocab.json in {folder} is not a token -> id mapping.")
        # Put added tokens into the BPE vocabulary at their declared ids, so ids stay right even if
        # they do not follow the vocabulary contiguously.
        vocab = {**vocab, **{token.content: token.id for token in added}}
        try:
            backend = build_byte_level_bpe(vocab, _read_merges(merges_path))
        except Exception as error:
            raise ModelLoadError(f"The tokenizer in {folder} could not be built: {error}") from error
    # Register added tokens from tokenizer_config.json so they are matched whole in text.
    backend.add_tokens([token.to_added_token() for token in added if not token.special])
    backend.add_special_tokens([token.to_added_token() for token in added if token.special])
    for token in added:
        actual = backend.token_to_id(token.content)
        if actual != token.id:
            raise ModelLoadError(
                f"The tokenizer in {folder} is inconsistent: {token.content!r} is declared as id {token.id} "
                f"but the vocabulary gives it id {actual}."
            )
    return backend


def _chat_template_source(folder: Path, config: Mapping[str, Any]) -> str:
    # transformers prefers a standalone chat_template.jinja over the one in tokenizer_config.json.
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        try:
            return jinja_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ModelLoadError(f"chat_template.jinja in {folder} could not be read: {error}") from error
    template = config.get("chat_template")
    if isinstance(template, list):
        # Older multi-template format: a list of {"name", "template"}; chat uses "default".
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, Mapping)}
        template = named.get("default")
    if not isinstance(template, str) or not template.strip():
        raise ModelLoadError(
            f"The model in {folder} has no chat template, so it cannot be used for chat (is it a base model?)."
        )
    return template


def _eos_ids(folder: Path, config: Mapping[str, Any], backend: Tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    eos = _token_content(config.get("eos_token"))
    for content in (eos, *_ALWAYS_STOP_TOKENS):
        if content is not None and backend.token_to_id(content) is not None:
            ids.add(backend.token_to_id(content))
    # The model's own stop ids (generation_config.json / config.json), when the folder has them.
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        if path.is_file():
            value = _read_json(path).get("eos_token_id")
            values = value if isinstance(value, list) else [value]
            ids.update(v for v in values if isinstance(v, int))
    if not ids:
        raise ModelLoadError(f"The tokenizer in {folder} has no end-of-turn token (<|im_end|>).")
    return frozenset(ids)


class Qwen3Tokenizer:
    """Encode/decode text and render chats for one Qwen3 model folder."""

    def __init__(
        self,
        backend: Tokenizer,
        chat_template: ChatTemplate,
        *,
        eos_token_ids: frozenset[int],
        name: str = "",
    ) -> None:
        self._backend = backend
        self.chat_template = chat_template
        self.eos_token_ids = eos_token_ids
        self.name = name
        added = backend.get_added_tokens_decoder()
        self._added_contents = {token_id: token.content for token_id, token in added.items()}
        self._special_ids = frozenset(token_id for token_id, token in added.items() if token.special)
        self.think_start_id: Optional[int] = backend.token_to_id(THINK_OPEN)
        self.think_end_id: Optional[int] = backend.token_to_id(THINK_CLOSE)
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
        config = _read_json(config_path)
        if not isinstance(config, dict):
            raise ModelLoadError(f"tokenizer_config.json in {folder} is not a JSON object.")
        backend = _load_backend(folder, _parse_added_tokens(config, folder))
        named_tokens = {name: _token_content(config.get(name)) for name in _NAMED_SPECIAL_TOKENS}
        template = ChatTemplate(_chat_template_source(folder, config), special_tokens=named_tokens)
        return cls(backend, template, eos_token_ids=_eos_ids(folder, config, backend), name=folder.name)

    # -- text <-> ids ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; control tokens written in the text (e.g. <|im_start|>) become their ids."""
        if not isinstance(text, str):
            raise RequestError("Only text can be tokenized.")
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        return self.token_table.decode(ids, skip_special_tokens=skip_special_tokens)

    def detokenizer(self, *, skip_special_tokens: bool = True) -> StreamingDetokenizer:
        return StreamingDetokenizer(self.token_table, skip_special_tokens=skip_special_tokens)

    @property
    def token_table(self) -> TokenTable:
        # Built on first use: ~150k entries, only needed once generation starts.
        if self._table is None:
            vocab = self._backend.get_vocab(with_added_tokens=False)
            self._table = TokenTable(vocab, self._added_contents, self._special_ids)
        return self._table

    def token_to_id(self, token: str) -> Optional[int]:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> Optional[str]:
        return self._backend.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (highest id + 1, added tokens included)."""
        if self._vocab_size is None:
            self._vocab_size = max(self._backend.get_vocab(with_added_tokens=True).values()) + 1
        return self._vocab_size

    @property
    def special_token_ids(self) -> frozenset[int]:
        return self._special_ids

    @property
    def backend(self) -> Tokenizer:
        return self._backend

    # -- chat -----------------------------------------------------------------------------------

    @property
    def thinking_mode(self) -> ThinkingMode:
        return self.chat_template.thinking_mode

    @property
    def template_opens_think(self) -> bool:
        """True when the generation prompt itself ends inside <think> (Thinking-2507): the model's
        output then holds only the closing </think>."""
        return self.chat_template.opens_think

    def apply_chat_template(
        self,
        messages: Sequence[Any],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: Optional[bool] = None,
        tools: Optional[Sequence[Mapping[str, Any]]] = None,
        tokenize: bool = True,
        sanitize_control_tokens: bool = False,
    ) -> Union[list[int], str]:
        """Render ``messages`` (dicts or ChatMessage) as the model expects; ids, or text if not ``tokenize``.

        By default control tokens typed inside messages (``<|im_end|>``, ``<think>``...) become
        control ids, exactly as in transformers. ``sanitize_control_tokens=True`` (ids only) encodes
        them as plain text instead, so pasted text cannot end a turn or fake a system message; it
        matches transformers' option of the same name.
        """
        if sanitize_control_tokens:
            if not tokenize:
                raise ValueError("sanitize_control_tokens=True needs tokenize=True: the result only exists as ids.")
            tokens_re, _ = control_token_patterns(self._control_tokens)
            text = self.chat_template.render(
                messages,
                add_generation_prompt=add_generation_prompt,
                enable_thinking=enable_thinking,
                tools=tools,
                mark_control_tokens=tokens_re,
            )
            return self._encode_marked(text)
        text = self.chat_template.render(
            messages, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking, tools=tools
        )
        return self.encode(text) if tokenize else text

    @property
    def _control_tokens(self) -> tuple[str, ...]:
        # Special tokens, plus the added tokens the template itself writes (<think>, <tool_call>...).
        literal = self.chat_template.literal_text
        return tuple(
            content
            for token_id, content in sorted(self._added_contents.items())
            if token_id in self._special_ids or (content in literal and not content.isspace())
        )

    def _encode_plain(self, text: str) -> list[int]:
        """Encode ``text`` without matching any added token (they come out as ordinary pieces)."""
        backend = self._backend
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        splits = [text]
        if backend.pre_tokenizer is not None:
            splits = [split for split, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
        return [token.id for split in splits for token in backend.model.tokenize(split)]

    def _encode_marked(self, text: str) -> list[int]:
        # Same algorithm as transformers' encode_marked_chat, for token-identical results: split at
        # the markers; marked tokens are encoded as text, the rest normally; each piece is encoded
        # after a "\n" that is then removed, so it starts the way it would mid-text.
        _, markers_re = control_token_patterns(tuple(self._added_contents.values()))
        pieces = markers_re.split(text)
        newline_ids = self.encode("\n")
        ids = self.encode(pieces[0])
        for index, piece in enumerate(pieces[1:], start=1):
            if not piece:
                continue  # a lone marker (the template split a marked token): dropped
            as_text = index % 2 == 1
            encode = self._encode_plain if as_text else self.encode
            piece_ids = encode("\n" + piece)
            if piece_ids[: len(newline_ids)] == newline_ids:
                piece_ids = piece_ids[len(newline_ids) :]
            else:
                piece_ids = encode(piece)
            if as_text and self.token_to_id(piece) in piece_ids:
                raise RequestError(f"The control token {piece!r} cannot be written as plain text with this tokenizer.")
            ids += piece_ids
        return ids
