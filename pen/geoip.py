"""A thin, lazily imported geoip2 wrapper for `acl N permit|deny country CC`.

The database is a MaxMind .mmdb file (GeoLite2-Country, GeoIP2-Country, or a
City database, which also carries the country).  It is named by the
`geoip_db FILE` command; nothing is downloaded.  geoip2 is imported only
when a database is opened, so pen starts without it.
"""

from .errors import CommandError

CACHE_MAX = 4096


class GeoIP:
    """An open database: `country(ip)` -> 'SE' or None."""

    def __init__(self, path, reader, lookup, misses):
        self.path = path
        self.reader = reader
        self.lookup = lookup      # reader.country or reader.city
        self.misses = misses      # exceptions meaning "no answer for this IP"
        self.cache = {}

    def country(self, ip):
        if ip in self.cache:
            return self.cache[ip]
        try:
            model = self.lookup(ip)
            code = model.country.iso_code or model.registered_country.iso_code
        except self.misses:
            code = None
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()
        self.cache[ip] = code
        return code

    def close(self):
        self.reader.close()

    def __call__(self, ip):
        return self.country(ip)


def open_db(path):
    """Open `path` as a GeoIP database, or raise CommandError saying why."""
    try:
        import geoip2.database
        import geoip2.errors
        import maxminddb
    except ImportError:
        raise CommandError("geoip_db: the geoip2 package is not installed "
                           "(pip install geoip2)") from None
    try:
        reader = geoip2.database.Reader(path)
    except FileNotFoundError:
        raise CommandError(f"geoip_db: {path}: no such file") from None
    except PermissionError:
        raise CommandError(f"geoip_db: {path}: permission denied") from None
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
        raise CommandError(f"geoip_db: {path}: not a MaxMind database ({e})") from None
    kind = reader.metadata().database_type
    if "Country" in kind:
        lookup = reader.country
    elif "City" in kind:
        lookup = reader.city
    else:
        reader.close()
        raise CommandError(f"geoip_db: {path}: a {kind!r} database has no countries "
                           "(expected a Country or City database)")
    misses = (geoip2.errors.AddressNotFoundError, ValueError)
    return GeoIP(path, reader, lookup, misses)
