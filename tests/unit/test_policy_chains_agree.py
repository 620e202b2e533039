"""Policy keeps its own copy of chain knowledge (it imports nothing from signer/): it must agree.

policies/document.py lists the networks of each chain, policies/schema.py the
shape of each chain's addresses, policies/accounts.py decodes them into
accounts. The chain adapters are the truth: every network they sign for and
every address they derive must be known to policy, in the right account.
"""

from __future__ import annotations

from typing import get_args

import pytest
from coincurve import PrivateKey

from custos.policies.accounts import account_id, account_ids
from custos.policies.document import NETWORKS, Chain, Network
from custos.policies.schema import _ADDRESS_FORMS
from custos.signer.chains import evm, tron
from custos.signer.chains.bitcoin_address import NETWORKS as BITCOIN_NETWORKS
from custos.signer.chains.registry import ADAPTERS

PUBLIC_KEYS = [
    PrivateKey(bytes([n]) * 32).public_key.format(compressed=False) for n in (1, 7, 0x42, 0xFE)
]


def _adapter_networks() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for chain, network in evm.CHAINS.values():
        found.setdefault(chain, set()).add(network)
    found["tron"] = set(tron.NETWORKS)
    found["bitcoin"] = set(BITCOIN_NETWORKS)
    return found


def test_policy_knows_exactly_the_chains_and_networks_the_adapters_sign_for() -> None:
    adapters = _adapter_networks()
    assert {chain: set(networks) for chain, networks in NETWORKS.items()} == adapters
    assert set(get_args(Chain)) == set(adapters)
    assert set(get_args(Network)) == set().union(*adapters.values())
    assert set(_ADDRESS_FORMS) == set(adapters)


@pytest.mark.parametrize("public_key", PUBLIC_KEYS)
def test_every_address_an_adapter_derives_is_a_valid_entry_of_its_account(
    public_key: bytes,
) -> None:
    addresses = [a for adapter in ADAPTERS.values() for a in adapter.addresses(public_key)]
    assert {a.chain for a in addresses} == set(NETWORKS)
    accounts: dict[str, set[str]] = {}
    for address in addresses:
        assert address.network in NETWORKS[address.chain], address
        assert _ADDRESS_FORMS[address.chain].fullmatch(address.address), address
        own = account_id(address.chain, address.address)
        assert own in account_ids(address.chain, address.address)
        family = "evm" if address.chain in ("ethereum", "bsc") else address.chain
        accounts.setdefault(family, set()).add(own)
    # One key, one account per chain family, whatever the network or script.
    assert {family: len(ids) for family, ids in accounts.items()} == {
        "evm": 1,
        "bitcoin": 1,
        "tron": 1,
    }
    # And the account ids are what policy derives, not a fallback spelling.
    assert next(iter(accounts["bitcoin"])).startswith("btc:kh:")
    assert next(iter(accounts["evm"])) == "evm:" + evm.key_address(public_key)[2:].lower()
