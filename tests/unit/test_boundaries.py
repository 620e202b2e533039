"""Which package may depend on which (DESIGN.md: no upward imports, domain packages free of grpc).

Each test imports every module of one package in a fresh interpreter and lists what
got loaded that the package must not depend on.
"""

from __future__ import annotations

from tests.boundaries import loaded_by, modules_of, under

SERVICE = ("grpc", "custos.signer", "custos.proto.custos")


def test_the_leaf_package_depends_on_no_other_custos_package() -> None:
    loaded = loaded_by(*modules_of("custos.common"))
    custos = [m for m in under(loaded, "custos") if m != "custos"]
    assert [m for m in custos if not m.startswith("custos.common")] == []


def test_hsm_knows_nothing_about_chains_policy_the_audit_log_or_the_service() -> None:
    loaded = loaded_by(*modules_of("custos.hsm"))
    assert under(loaded, *SERVICE, "custos.proto", "custos.policies", "custos.audit") == []


def test_the_chain_adapters_reach_neither_grpc_the_service_nor_the_token() -> None:
    """Proto is decoded at the edge (signer/edge/requests.py): adapters take domain values.

    proto.tron (Tron's own transaction format) is what the Tron adapter signs, and the
    HD path rules and BIP32 public derivation are pure; the PKCS#11 side of hsm is not.
    """
    loaded = loaded_by(*modules_of("custos.signer.chains"))
    service = [m for m in under(loaded, *SERVICE) if not m.startswith("custos.signer.chains")]
    assert service == ["custos.signer"]  # the package itself, whose __init__ is empty
    hsm = set(under(loaded, "custos.hsm"))
    assert hsm <= {"custos.hsm", "custos.hsm.bip32", "custos.hsm.hd_paths"}, hsm
    assert under(loaded, "pkcs11", "custos.policies", "custos.audit") == []


def test_policies_import_nothing_from_the_service_or_the_hsm() -> None:
    loaded = loaded_by(*modules_of("custos.policies"))
    assert under(loaded, *SERVICE, "pkcs11", "custos.hsm", "custos.proto") == []


def test_the_audit_package_stays_offline() -> None:
    # Auditors run the verifier without the service: no grpc, signer, hsm or pkcs11.
    loaded = loaded_by(*modules_of("custos.audit"))
    assert under(loaded, *SERVICE, "pkcs11", "custos.hsm") == []


def test_a_boundary_test_sees_a_forbidden_import() -> None:
    # The helper itself: importing the service does load grpc and the contract.
    loaded = loaded_by("custos.signer.edge.services")
    assert under(loaded, "grpc")
    assert under(loaded, "custos.proto.custos")


def test_the_service_never_imports_its_tools() -> None:
    # The CLI, `custos init` and the demo live beside the service, not inside it.
    service = [
        *modules_of("custos.signer.edge"),
        *modules_of("custos.signer.usecases"),
        *modules_of("custos.signer.store"),
    ]
    assert under(loaded_by(*service), "custos.signer.tools") == []


def test_use_cases_reach_the_edge_only_for_its_shared_vocabulary() -> None:
    """Errors, config, logs, metrics, events, identities and the decoded request types:
    never the server, a servicer or an interceptor."""
    loaded = loaded_by(*modules_of("custos.signer.usecases"))
    edge = {m.removeprefix("custos.signer.edge.") for m in under(loaded, "custos.signer.edge")}
    vocabulary = {"errors", "config", "logs", "metrics", "events", "auth", "requests"}
    assert edge - {"custos.signer.edge"} <= vocabulary, edge - vocabulary
