"""The API's ceremony kinds (keys.proto CeremonyKind) and the rules' kind names
(policies.ceremonies): one table for the servicers and for the CLI, which recomputes a
ceremony's digest from the message the server shows."""

from __future__ import annotations

from custos.policies import ceremonies
from custos.proto.custos.v1 import keys_pb2

KIND_OF_MESSAGE: dict[keys_pb2.CeremonyKind, str] = {
    keys_pb2.CEREMONY_KIND_CREATE_KEY: ceremonies.CREATE_KEY,
    keys_pb2.CEREMONY_KIND_DISABLE_KEY: ceremonies.DISABLE_KEY,
    keys_pb2.CEREMONY_KIND_ENABLE_KEY: ceremonies.ENABLE_KEY,
    keys_pb2.CEREMONY_KIND_RETIRE_KEY: ceremonies.RETIRE_KEY,
    keys_pb2.CEREMONY_KIND_IMPORT_KEY: ceremonies.IMPORT_KEY,
    keys_pb2.CEREMONY_KIND_BACKUP_KEY_INIT: ceremonies.BACKUP_KEY_INIT,
    keys_pb2.CEREMONY_KIND_BACKUP: ceremonies.BACKUP,
    keys_pb2.CEREMONY_KIND_EXPORT_KEY: ceremonies.EXPORT_KEY,
    keys_pb2.CEREMONY_KIND_IMPORT_KEY_INIT: ceremonies.IMPORT_KEY_INIT,
    keys_pb2.CEREMONY_KIND_CREATE_WALLET: ceremonies.CREATE_WALLET,
    keys_pb2.CEREMONY_KIND_IMPORT_WALLET: ceremonies.IMPORT_WALLET,
    keys_pb2.CEREMONY_KIND_EXPORT_WALLET: ceremonies.EXPORT_WALLET,
}
MESSAGE_OF_KIND = {kind: number for number, kind in KIND_OF_MESSAGE.items()}
