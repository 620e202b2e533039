"""Custos: HSM-backed key custody and multi-chain signing.

The repository's top-level folders are this package's subpackages (custos/<name>
is a relative symlink to ../<name>): custos.signer, custos.hsm, custos.policies,
custos.audit, custos.proto and custos.common. They are imported only under these
names; each refuses to load under its bare folder name (one module, one name).
"""
