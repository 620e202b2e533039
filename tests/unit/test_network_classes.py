"""signer/chains/networks.py: every network an adapter signs for has exactly one class."""

from __future__ import annotations

import pytest

from custos.policies.document import NETWORKS as POLICY_NETWORKS
from custos.signer.chains import evm, networks, tron
from custos.signer.chains.bitcoin_address import NETWORKS as BITCOIN_NETWORKS
from custos.signer.chains.registry import ADAPTERS
from tests.support import LocalKey


def _adapter_networks() -> set[tuple[str, str]]:
    found = {("bitcoin", n) for n in BITCOIN_NETWORKS}
    found |= set(evm.CHAINS.values())
    found |= {("tron", n) for n in tron.NETWORKS}
    return found


def test_the_table_covers_exactly_the_networks_the_adapters_sign_for() -> None:
    assert set(networks.CLASS_OF) == _adapter_networks()
    # And every address a key shows is on a network with a class.
    key = LocalKey(bytes([3] * 32))
    shown = {(a.chain, a.network) for adapter in ADAPTERS.values() for a in adapter.addresses(
        key.info.public_key
    )}  # fmt: skip
    assert shown == set(networks.CLASS_OF)
    # Policy knows the same networks (tests/unit/test_policy_chains_agree.py checks the rest).
    assert {(c, n) for c, ns in POLICY_NETWORKS.items() for n in ns} == set(networks.CLASS_OF)


def test_mainnet_is_exactly_each_chains_main_network() -> None:
    mainnets = {k for k, v in networks.CLASS_OF.items() if v == networks.MAINNET}
    assert mainnets == {("bitcoin", "mainnet"), ("ethereum", "mainnet"), ("bsc", "mainnet"),
                        ("tron", "mainnet")}  # fmt: skip
    assert set(networks.CLASS_OF.values()) == set(networks.NETWORK_CLASSES)


@pytest.mark.parametrize(
    ("chain_id", "expected"),
    [(1, "mainnet"), (56, "mainnet"), (11155111, "testnet"), (17000, "testnet"), (97, "testnet")],
)
def test_evm_chain_ids_map_to_a_class(chain_id: int, expected: str) -> None:
    assert networks.network_class(*evm.CHAINS[chain_id]) == expected


@pytest.mark.parametrize(
    ("chain", "network", "expected"),
    [
        ("bitcoin", "testnet", "testnet"),
        ("bitcoin", "signet", "testnet"),
        ("bitcoin", "regtest", "testnet"),
        ("tron", "nile", "testnet"),
        ("tron", "shasta", "testnet"),
        ("tron", "mainnet", "mainnet"),
    ],
)
def test_bitcoin_and_tron_networks_map_to_a_class(chain: str, network: str, expected: str) -> None:
    assert networks.network_class(chain, network) == expected


def test_unknown_networks_have_no_class() -> None:
    with pytest.raises(KeyError):
        networks.network_class("ethereum", "goerli")
    with pytest.raises(KeyError):
        networks.network_class("tron", "testnet")


def test_parsing_a_class() -> None:
    assert networks.parse_network_class("mainnet") == "mainnet"
    assert networks.parse_network_class("testnet") == "testnet"
    for bad in ("", "Mainnet", "sepolia", "devnet"):
        with pytest.raises(ValueError, match="must be one of mainnet, testnet"):
            networks.parse_network_class(bad)


def test_policy_classes_networks_as_the_service_does() -> None:
    # policies/ keeps its own copy (it imports nothing from signer/): the same table.
    from custos.policies.document import NETWORK_CLASSES

    for (_chain, network), network_class in networks.CLASS_OF.items():
        assert network in NETWORK_CLASSES[network_class]
    assert sorted(n for ns in NETWORK_CLASSES.values() for n in ns) == sorted(
        {network for _, network in networks.CLASS_OF}
    )
