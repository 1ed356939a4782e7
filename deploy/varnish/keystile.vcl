# Varnish in front of keystile (Varnish 7; tested by tests/test_varnish.py).
#
# keystile decides what may be shared: every response is `no-store` unless a route
# opted in with http_cache, and a public one never depends on the caller (S22).
# This file adds a second, independent fence (S21): Varnish stores a response only
# if it says `public`, sets no cookie, is not private/no-store/no-cache, and does not
# vary on Cookie or Authorization. Requests that carry a cookie or a token may be
# answered from cache, but only with such public objects; everything else they
# fetch is never stored, so one caller's response is never handed to another.
#
# Purging: keystile sends `BAN` with `X-Purge-Surrogate-Keys: key1 key2` after a
# write (settings: purge_urls); every object whose Surrogate-Key names one of the
# keys is dropped. `PURGE <url>` drops one URL. Both only from the `purgers` ACL.
#
# Put keystile's address below, and set keystile's trusted_proxy_hops to count
# Varnish (it appends the client address to X-Forwarded-For).

vcl 4.1;

import std;

backend keystile {
    .host = "127.0.0.1";
    .port = "8000";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .probe = {
        .url = "/healthz";
        .interval = 1s;
        .timeout = 1s;
        .window = 3;
        .threshold = 2;
    }
}

acl purgers {
    "127.0.0.1";
    "::1";
}

# How long an expired object is kept to revalidate it with If-None-Match (a 304
# from keystile refreshes it without resending the body).
sub keystile_keep {
    set beresp.keep = 1h;
}

sub vcl_recv {
    if (req.restarts == 0) {
        # Only this file may set it (see vcl_hit).
        unset req.http.X-Keystile-Revalidate;
    }
    if (req.method == "PURGE" || req.method == "BAN") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.method == "PURGE") {
            return (purge);
        }
        # Keys are [A-Za-z0-9_:-] only (keystile refuses others), so they are safe
        # to splice into the ban's regular expression.
        if (req.http.X-Purge-Surrogate-Keys !~ "^[A-Za-z0-9_:-]{1,128}( [A-Za-z0-9_:-]{1,128}){0,63}$") {
            return (synth(400, "Bad X-Purge-Surrogate-Keys"));
        }
        # (The ban expression must not contain a space, hence [[:blank:]].)
        if (std.ban("obj.http.Surrogate-Key ~ (^|[[:blank:]])(" +
                regsuball(req.http.X-Purge-Surrogate-Keys, " ", "|") + ")([[:blank:]]|$)")) {
            return (synth(200, "Banned"));
        }
        return (synth(400, std.ban_error()));
    }
    if (req.http.host) {
        set req.http.host = req.http.host.lower();
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    if (req.http.X-Keystile-Revalidate) {
        # Past its stale-while-revalidate and the origin is up: no stale copy.
        set req.grace = 0s;
    }
    # Deliberately no pass for Cookie/Authorization (the builtin's rule): such
    # requests may hit public objects, which are the same for everyone. What they
    # fetch is stored only if public (vcl_backend_response).
    return (hash);
}

sub vcl_hit {
    # stale-if-error stretched the grace (vcl_backend_response); while the origin
    # is healthy, serve stale only within stale-while-revalidate.
    if (obj.ttl <= 0s
        && obj.ttl + std.duration(obj.http.X-Keystile-SWR + "s", 0s) <= 0s
        && std.healthy(req.backend_hint)
        && req.restarts == 0) {
        set req.http.X-Keystile-Revalidate = "1";
        return (restart);
    }
    return (deliver);
}

sub vcl_backend_response {
    if (bereq.uncacheable) {
        return (deliver);
    }
    if (beresp.http.Set-Cookie
        || beresp.http.Cache-Control !~ "(?i)(^|,)\s*public\s*(,|$)"
        || beresp.http.Cache-Control ~ "(?i)(private|no-store|no-cache)"
        || beresp.http.Vary ~ "(?i)(^|,)\s*(\*|cookie|authorization)\s*(,|$)"
        || beresp.ttl <= 0s) {
        # Hit-for-miss: not stored, and later requests go straight to the origin
        # (no queueing behind each other) until a cacheable answer replaces it.
        set beresp.ttl = 10s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # Varnish has already set ttl from s-maxage/max-age and grace from
    # stale-while-revalidate; without that directive, serve nothing stale.
    if (beresp.http.Cache-Control !~ "(?i)stale-while-revalidate=[0-9]+") {
        set beresp.grace = 0s;
    }
    set beresp.http.X-Keystile-SWR = std.integer(regsub(beresp.grace, "\..*$", ""), 0);
    if (beresp.http.Cache-Control ~ "(?i)stale-if-error=[0-9]+") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control, "(?i)^.*stale-if-error=([0-9]+).*$", "\1") + "s",
            beresp.grace);
    }
    call keystile_keep;
    return (deliver);
}

sub vcl_deliver {
    # Tags and bookkeeping are for this cache only.
    unset resp.http.Surrogate-Key;
    unset resp.http.X-Keystile-SWR;
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
