"""The plan's KEKs: the current one (`keys`) and earlier ones (`keys.previous`), each with the
signing key beside it.

New data keys are wrapped under the current KEK only. A data key wrapped under an earlier KEK is
unwrapped by whichever KEK of the chain wrapped it, so a plan whose KEK was rotated keeps reading
every dataset until `migrator keys rotate` has re-wrapped its data keys; then the earlier KEKs
can be dropped from the plan and retired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migrator.errors import KeyProviderError, WrongKeyError
from migrator.keys.datakey import DataKey
from migrator.keys.provider import KeyProvider, WrappedKey
from migrator.keys.signing import AnyOf


class KekChain:
    """A `KeyProvider` over the current KEK and the previous ones, tried in that order."""

    def __init__(self, current: KeyProvider, previous: Sequence[KeyProvider] = ()) -> None:
        self.current = current
        self.previous = tuple(previous)
        self.name = current.name
        self.signer = current.signer  # what this plan signs with

    @classmethod
    def of(cls, provider: KeyProvider) -> KekChain:
        """The provider itself if it is a chain, else a chain of that one KEK."""
        return provider if isinstance(provider, KekChain) else cls(provider)

    @property
    def labels(self) -> tuple[str, ...]:
        """Where each KEK is named in the plan, current first."""
        return ("keys", *(f"keys.previous[{i}]" for i in range(len(self.previous))))

    def trust(self) -> AnyOf:
        """The signing keys this plan's readers trust: the current KEK's and each earlier
        one's (a keyring signed before the signing key changed reads until `keys rotate`)."""
        return AnyOf([self.current.signer, *(p.signer for p in self.previous)])

    def describe(self) -> str:
        if not self.previous:
            return self.current.describe()
        earlier = ", ".join(p.describe() for p in self.previous)
        return f"{self.current.describe()} (earlier KEKs, unwrap only: {earlier})"

    def __repr__(self) -> str:
        return f"KekChain({self.current!r}, previous={list(self.previous)!r})"

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[DataKey, WrappedKey]:
        return self.current.generate_data_key(context)

    def wrap(self, key: DataKey, context: Mapping[str, str]) -> WrappedKey:
        return self.current.wrap(key, context)

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        return self.unwrap_with(wrapped)[0]

    def unwrap_with(self, wrapped: WrappedKey) -> tuple[DataKey, int]:
        """The data key, and which KEK opened it: 0 the current one, i + 1 keys.previous[i].

        WrongKeyError when no KEK of the chain wrapped it; KeyProviderError when one could not
        be asked (unreachable, disabled) and none of the others opened it.
        """
        wrong: list[str] = []
        failed: list[str] = []
        keks = (self.current, *self.previous)
        for index, (label, provider) in enumerate(zip(self.labels, keks, strict=True)):
            try:
                return provider.unwrap(wrapped), index
            except WrongKeyError as exc:
                wrong.append(f"{label}: {exc}")
            except KeyProviderError as exc:
                failed.append(f"{label}: {exc}")
        what = f"data key {wrapped.key_id} (wrapped by {wrapped.provider} KEK {wrapped.kek_id})"
        if failed:
            raise KeyProviderError(f"{what} could not be unwrapped: {'; '.join(failed + wrong)}")
        hint = (
            ""
            if self.previous
            else "; if the plan's KEK was changed, name the KEK that wrapped it in keys.previous"
        )
        raise WrongKeyError(f"no KEK of the plan unwraps {what}: {'; '.join(wrong)}{hint}")
