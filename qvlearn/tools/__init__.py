"""Tools around the model: nothing in the model (:mod:`qvlearn.encoder`, :mod:`qvlearn.engine`, :mod:`qvlearn.spec`)
imports them.

    taps       golden tap files and compare
    bugs       the bug zoo: real porting bugs as kernel tables
    precision  bf16 / fp16 emulation as a kernel table
    reference  the transformers oracle (needs torch)
    bench      benchmarks against transformers (python -m qvlearn.bench)
    cli        the command line (python -m qvlearn)
    course     notebook helpers
    cache      the course's default model, written once
    check      closeness checks with readable messages
"""
