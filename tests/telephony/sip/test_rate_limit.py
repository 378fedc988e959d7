from telephony.sip.rate_limit import SourceLimiter


def test_a_source_is_ignored_once_its_bad_requests_exceed_the_burst_then_recovers():
    limiter = SourceLimiter(rate=2.0, burst=5.0)
    for _ in range(5):
        assert limiter.allowed("10.0.0.1", now=0.0)
        limiter.penalise("10.0.0.1", now=0.0)
    assert not limiter.allowed("10.0.0.1", now=0.0)
    assert limiter.allowed("10.0.0.2", now=0.0)  # others are not affected
    assert limiter.allowed("10.0.0.1", now=0.5)  # a token back after 1/rate seconds


def test_the_table_of_sources_is_bounded_the_oldest_forgotten():
    limiter = SourceLimiter(rate=0.001, burst=1.0, max_sources=3)
    limiter.penalise("10.0.0.0", now=0.0)
    assert not limiter.allowed("10.0.0.0", now=0.0)
    for i in range(1, 4):
        limiter.penalise(f"10.0.0.{i}", now=0.0)
    assert limiter.allowed("10.0.0.0", now=0.0) and not limiter.allowed("10.0.0.3", now=0.0)
