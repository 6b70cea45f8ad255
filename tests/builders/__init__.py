"""Builders shared by the tests and the benchmarks (bench/), in one place.

inputs       `Events`: valid input envelopes (parsed contract models) with ids and a clock
streams      `mixed_stream(n)`: a long, valid, mixed input stream for folds, loads and benchmarks
allocations  allocation events (the allocator's outputs) for the projector and notifier tests
samples      `VALID`: one valid raw JSON envelope per input event type, as a producer sends it
environment  `settings_as_env(settings)`: the environment a `fulfil` subprocess reads
"""
