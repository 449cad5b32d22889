"""The image scan's one decision: which installed Debian packages a suite has fixed."""

from __future__ import annotations

from tests.support.image_scan import behind


def test_a_package_older_than_the_security_suite_is_reported_with_its_fix() -> None:
    installed = {"openssl": "3.0.15-1~deb12u1", "libc6": "2.36-9+deb12u10", "bash": "5.2.15-2+b7"}
    fixes = {"openssl": "3.0.17-1~deb12u2", "libc6": "2.36-9+deb12u10", "zlib1g": "1:1.3"}
    assert behind(installed, fixes) == [
        {"package": "openssl", "installed": "3.0.15-1~deb12u1", "fixed": "3.0.17-1~deb12u2"}
    ]


def test_debian_version_order_decides_not_text_order() -> None:
    # an epoch outranks everything after it; "~" sorts before the empty string
    assert behind({"tzdata": "2025b-0+deb12u1"}, {"tzdata": "1:2024a-1"}) == [
        {"package": "tzdata", "installed": "2025b-0+deb12u1", "fixed": "1:2024a-1"}
    ]
    assert behind({"curl": "7.88.1-10+deb12u5"}, {"curl": "7.88.1-10+deb12u5~rc1"}) == []
