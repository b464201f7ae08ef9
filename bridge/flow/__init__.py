"""Flow control, pure logic with an injected clock: rate limiting, cool-downs, backoff."""
