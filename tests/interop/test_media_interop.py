"""Media between mxserver and a real Synapse over loopback federation, both ways round.

mxserver fetches Synapse's media with ``/_matrix/federation/v1/media/download``
and ``/thumbnail`` (multipart); Synapse fetches mxserver's the same way, which
exercises mxserver's federation media endpoints.
"""

from __future__ import annotations

import io
import json
import os
import urllib.error
import urllib.request
from typing import Any

from PIL import Image

from tests.interop.base import InteropTestCase
from tests.interop.harness import User


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 160, 90)).save(out, format="PNG")
    return out.getvalue()


def _raw(
    method: str, url: str, token: str, data: bytes | None = None, ctype: str | None = None, timeout: float = 60.0
) -> tuple[int, bytes, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    if ctype:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def upload(user: User, data: bytes, ctype: str, filename: str) -> str:
    code, body, _ = _raw(
        "POST", f"{user.server.base_url}/_matrix/media/v3/upload?filename={filename}", user.token, data, ctype
    )
    assert code == 200, (user.server.kind, code, body[:500])
    mxc: str = json.loads(body)["content_uri"]
    assert mxc.startswith(f"mxc://{user.server.server_name}/"), mxc
    return mxc[len("mxc://") :]


def download(user: User, mxc: str) -> tuple[int, bytes, Any]:
    return _raw("GET", f"{user.server.base_url}/_matrix/client/v1/media/download/{mxc}", user.token)


def thumbnail(user: User, mxc: str, width: int, height: int, method: str) -> tuple[int, bytes, Any]:
    url = (
        f"{user.server.base_url}/_matrix/client/v1/media/thumbnail/{mxc}?width={width}&height={height}&method={method}"
    )
    return _raw("GET", url, user.token)


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


class _MediaScenarios(InteropTestCase):
    """``host`` uploads; ``guest`` (on the other server) downloads over federation."""

    def test_download_round_trip(self) -> None:
        host_user, guest_user = self.users()
        data = os.urandom(150_000)
        mxc = upload(host_user, data, "application/octet-stream", "blob.bin")
        code, body, headers = download(guest_user, mxc)
        self.assertEqual(code, 200, body[:300])
        self.assertEqual(body, data)
        self.assertIn("blob.bin", headers.get("Content-Disposition", ""))
        # Again from the guest server's cache.
        self.assertEqual(download(guest_user, mxc)[:2], (200, data))

    def test_thumbnail_of_remote_image(self) -> None:
        host_user, guest_user = self.users()
        mxc = upload(host_user, _png(800, 400), "image/png", "wide.png")
        code, body, headers = thumbnail(guest_user, mxc, 96, 96, "crop")
        self.assertEqual(code, 200, body[:300])
        self.assertEqual(size_of(body), (96, 96))
        code, body, _ = thumbnail(guest_user, mxc, 320, 240, "scale")
        self.assertEqual(code, 200, body[:300])
        width, height = size_of(body)
        # scale keeps the 2:1 aspect; never smaller than asked, never larger than the source
        self.assertAlmostEqual(width / height, 2.0, delta=0.05)
        self.assertTrue(320 <= width <= 800, (width, height))

    def test_unknown_remote_media(self) -> None:
        _, guest_user = self.users()
        code, body, _ = download(guest_user, f"{self.host.server_name}/doesNotExist{self.tag}")
        self.assertEqual(code, 404, body[:300])


class MxserverServesTests(_MediaScenarios):
    """mxserver holds the media; Synapse fetches it from mxserver's federation media endpoints."""

    host_kind = "mxserver"


class SynapseServesTests(_MediaScenarios):
    """Synapse holds the media; mxserver fetches it over federation and caches it."""

    host_kind = "synapse"

    def test_thumbnail_before_download_uses_the_thumbnail_endpoint(self) -> None:
        host_user, guest_user = self.users()
        mxc = upload(host_user, _png(600, 600), "image/png", "square.png")
        code, body, headers = thumbnail(guest_user, mxc, 32, 32, "crop")
        self.assertEqual(code, 200, body[:300])
        self.assertEqual(size_of(body), (32, 32))
        self.assertTrue(headers.get("Content-Type", "").startswith("image/"))


del _MediaScenarios
