"""The reference implementation's side of the npm package tests (run with the Python of the reference's
venv, scripts/install-reference.sh). Prints JSON.

  reference.py verify <public-key-b64> <message.json>   -> {"passed": bool, "error_code", "error_message"}
  reference.py sign <private-key.pem> <selector> <domain> <message.json>  -> the signed message JSON
"""
import base64
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from atp.core.message import ATPMessage
from atp.core.signature import Signer, Verifier


def main(argv):
    if argv[0] == "verify":
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(argv[1], validate=True))
        with open(argv[2], encoding="utf-8") as f:
            msg = ATPMessage.from_json(f.read())
        r = Verifier.verify(msg, key)
        print(json.dumps({"passed": r.passed, "error_code": r.error_code, "error_message": r.error_message}))
    elif argv[0] == "sign":
        with open(argv[1], "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
        with open(argv[4], encoding="utf-8") as f:
            msg = ATPMessage.from_json(f.read())
        print(Signer(key, argv[2], argv[3]).sign(msg).to_json())
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
