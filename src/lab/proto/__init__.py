"""agent<->labd and cli<->labd wire protocol: messages, data frames, sans-IO sessions."""

from lab.proto.errors import CloseCode, ProtocolError
from lab.proto.frames import Channel, DataFrame, decode_data, encode_data
from lab.proto.messages import Message, decode, encode

__all__ = [
    "Channel",
    "CloseCode",
    "DataFrame",
    "Message",
    "ProtocolError",
    "decode",
    "decode_data",
    "encode",
    "encode_data",
]
