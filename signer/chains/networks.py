"""Network classes: every network a chain adapter signs for is `mainnet` or `testnet`.

A key belongs to one class for its whole life (KeyRecord.network_class) and
signs only for networks of that class. The class is what gives a signature its
meaning where the signed bytes do not: a Bitcoin or Tron signature does not
depend on the request's `network` label (a `tb1q` and a `bc1q` output with the
same program are the same script; a Tron txID is the same on nile and
mainnet), so a key that may sign a request labelled `testnet` may as well have
signed a mainnet spend of its coins. EVM chain ids are signed (EIP-155), and
they map to a class too through evm.CHAINS.

This table is the one place that says which class a network is in; a test
(tests/unit/test_network_classes.py) checks that it covers exactly the
networks the adapters sign for (bitcoin_address.NETWORKS, evm.CHAINS,
tron.NETWORKS).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

NetworkClass = Literal["mainnet", "testnet"]
NETWORK_CLASSES: Final[tuple[NetworkClass, ...]] = get_args(NetworkClass)

MAINNET: Final[NetworkClass] = "mainnet"
TESTNET: Final[NetworkClass] = "testnet"

# (chain, network) as the adapters name them in Intent and Address.
CLASS_OF: Final[dict[tuple[str, str], NetworkClass]] = {
    ("bitcoin", "mainnet"): MAINNET,
    ("bitcoin", "testnet"): TESTNET,
    ("bitcoin", "signet"): TESTNET,
    ("bitcoin", "regtest"): TESTNET,
    ("ethereum", "mainnet"): MAINNET,  # chain id 1
    ("ethereum", "sepolia"): TESTNET,  # 11155111
    ("ethereum", "holesky"): TESTNET,  # 17000
    ("bsc", "mainnet"): MAINNET,  # 56
    ("bsc", "testnet"): TESTNET,  # 97
    ("tron", "mainnet"): MAINNET,
    ("tron", "shasta"): TESTNET,
    ("tron", "nile"): TESTNET,
}


def network_class(chain: str, network: str) -> NetworkClass:
    """The class of a network an adapter signs for; KeyError for any other (a bug)."""
    return CLASS_OF[(chain, network)]


def parse_network_class(value: str) -> NetworkClass:
    """`value` as a class; ValueError naming the choices otherwise."""
    for known in NETWORK_CLASSES:
        if value == known:
            return known
    raise ValueError(f"must be one of {', '.join(NETWORK_CLASSES)}, not {value!r}")
