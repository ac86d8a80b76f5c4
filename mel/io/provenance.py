"""What a derived file was built from: the sha256 of each source file, so that a source edited since is noticed."""
import hashlib
import os


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_record(path):
    """{"file": base name, "sha256": digest} of a source file, as a derived file records it."""
    return {"file": os.path.basename(path), "sha256": sha256_of(path)}
