import errno
import socket

import ifaddr
import pytest


def test_loopback_is_the_only_network_and_has_a_second_address_for_ice():
    addresses = {(adapter.name, ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips
                 if isinstance(ip.ip, str)}
    assert addresses == {("lo", "127.0.0.1"), ("lo", "127.0.0.2")}


def test_nothing_beyond_loopback_can_be_reached():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(OSError) as error:
            udp.sendto(b"x", ("192.0.2.4", 5060))
    assert error.value.errno == errno.ENETUNREACH
