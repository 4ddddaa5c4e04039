"""The context packet: what bots extracted about a contact, moved with it on every handoff.

``Context`` mirrors ``baton.v1.ContextPacket``. Optional proto fields are
``None`` when unset, so "the lead never said" and "the lead said 0" stay
different through ``to_proto``/``from_proto`` and ``to_dict``/``from_dict``
(the JSON-safe form kept in framework state). The router merges packets:
earlier answers are kept unless a later bot sets the field; answered
questions, pending intents and attributes accumulate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from baton_client.pb import types_pb2

__all__ = ["Budget", "Context", "PropertyPreferences"]


@dataclass
class Budget:
    """A price range; ``0`` means that end is open."""

    min: float = 0.0
    max: float = 0.0
    currency: str = ""

    def to_proto(self) -> types_pb2.Budget:
        """The wire message."""
        return types_pb2.Budget(min=self.min, max=self.max, currency=self.currency)

    @classmethod
    def from_proto(cls, msg: types_pb2.Budget) -> Budget:
        """From the wire message."""
        return cls(min=msg.min, max=msg.max, currency=msg.currency)


@dataclass
class PropertyPreferences:
    """What a buyer looks for."""

    locations: list[str] = field(default_factory=list)
    property_types: list[str] = field(default_factory=list)
    bedrooms_min: int | None = None
    bathrooms_min: int | None = None
    must_haves: list[str] = field(default_factory=list)

    def to_proto(self) -> types_pb2.PropertyPreferences:
        """The wire message."""
        msg = types_pb2.PropertyPreferences(
            locations=self.locations,
            property_types=self.property_types,
            must_haves=self.must_haves,
        )
        if self.bedrooms_min is not None:
            msg.bedrooms_min = self.bedrooms_min
        if self.bathrooms_min is not None:
            msg.bathrooms_min = self.bathrooms_min
        return msg

    @classmethod
    def from_proto(cls, msg: types_pb2.PropertyPreferences) -> PropertyPreferences:
        """From the wire message."""
        return cls(
            locations=list(msg.locations),
            property_types=list(msg.property_types),
            bedrooms_min=msg.bedrooms_min if msg.HasField("bedrooms_min") else None,
            bathrooms_min=msg.bathrooms_min if msg.HasField("bathrooms_min") else None,
            must_haves=list(msg.must_haves),
        )


_Scalar = Literal[
    "timeline", "property_address", "temperature", "qualification_score", "conversation_summary"
]
_OPTIONAL_SCALARS: tuple[_Scalar, ...] = (
    "timeline",
    "property_address",
    "temperature",
    "qualification_score",
    "conversation_summary",
)


@dataclass
class Context:
    """The context packet (``baton.v1.ContextPacket``)."""

    budget: Budget | None = None
    timeline: str | None = None
    property_preferences: PropertyPreferences | None = None
    property_address: str | None = None
    temperature: str | None = None
    qualification_score: float | None = None
    conversation_summary: str | None = None
    answered_questions: list[str] = field(default_factory=list)
    pending_intents: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)

    def to_proto(self) -> types_pb2.ContextPacket:
        """The wire message; ``None`` fields stay unset."""
        msg = types_pb2.ContextPacket(
            answered_questions=self.answered_questions,
            pending_intents=self.pending_intents,
            attributes=self.attributes,
        )
        if self.budget is not None:
            msg.budget.CopyFrom(self.budget.to_proto())
        if self.property_preferences is not None:
            msg.property_preferences.CopyFrom(self.property_preferences.to_proto())
        for name in _OPTIONAL_SCALARS:
            value = getattr(self, name)
            if value is not None:
                setattr(msg, name, value)
        return msg

    @classmethod
    def from_proto(cls, msg: types_pb2.ContextPacket) -> Context:
        """From the wire message; unset fields become ``None``."""
        scalars = {n: getattr(msg, n) if msg.HasField(n) else None for n in _OPTIONAL_SCALARS}
        return cls(
            budget=Budget.from_proto(msg.budget) if msg.HasField("budget") else None,
            property_preferences=(
                PropertyPreferences.from_proto(msg.property_preferences)
                if msg.HasField("property_preferences")
                else None
            ),
            answered_questions=list(msg.answered_questions),
            pending_intents=list(msg.pending_intents),
            attributes=dict(msg.attributes),
            **scalars,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields that are set (for framework state and prompts)."""
        out: dict[str, Any] = {}
        if self.budget is not None:
            out["budget"] = vars(self.budget).copy()
        if self.property_preferences is not None:
            prefs = vars(self.property_preferences)
            out["property_preferences"] = {k: v for k, v in prefs.items() if v not in (None, [])}
        for name in _OPTIONAL_SCALARS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.answered_questions:
            out["answered_questions"] = list(self.answered_questions)
        if self.pending_intents:
            out["pending_intents"] = list(self.pending_intents)
        if self.attributes:
            out["attributes"] = dict(self.attributes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Context:
        """The inverse of ``to_dict``; unknown keys are an error (a typo is not silence)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown context fields: {sorted(unknown)}")
        values = dict(data)
        for name in ("answered_questions", "pending_intents"):
            if name in values:
                values[name] = list(values[name])
        if "attributes" in values:
            values["attributes"] = dict(values["attributes"])
        if "budget" in values:
            values["budget"] = Budget(**values["budget"])
        if "property_preferences" in values:
            values["property_preferences"] = PropertyPreferences(**values["property_preferences"])
        return cls(**values)

    def is_empty(self) -> bool:
        """True when no field is set."""
        return not self.to_dict()
