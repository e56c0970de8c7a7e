"""A tiny MaxMind-format Country database for tests, built with mmdb-writer
(no downloads): 127.0.0.0/24 is SE, 10.0.0.0/8 US, 2001:db8::/32 DE."""

NETWORKS = {"127.0.0.0/24": "SE", "10.0.0.0/8": "US", "2001:db8::/32": "DE"}


def build_country_db(path):
    import mmdb_writer
    import netaddr
    w = mmdb_writer.MMDBWriter(ip_version=6, database_type="GeoLite2-Country",
                               ipv4_compatible=True)
    for net, cc in NETWORKS.items():
        w.insert_network(netaddr.IPSet([net]), {"country": {"iso_code": cc}})
    w.to_db_file(str(path))
    return str(path)
