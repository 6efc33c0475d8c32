"""A word count with a side input and a counter, run by the tests with a Python SDK of another
Beam release (its own interpreter): `python wordcount.py OUTPUT_PREFIX [pipeline flags]`.
Prints one JSON line: the final state, the counter's committed values and the job id.
Written for every Beam release the tests use, so only long-standing APIs."""

import json
import sys

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

LINES = ["the cat sat on the mat", "the dog sat", "a cat ran"]
STOPWORDS = ["a", "on"]


class CountWords(beam.DoFn):
    def __init__(self):
        self.words = Metrics.counter("wordcount", "words")

    def process(self, line, stopwords):
        for word in line.split():
            if word not in stopwords:
                self.words.inc()
                yield word


def harness_version(_):
    """The Beam release of the harness that runs this, as the job's own output says it."""
    import apache_beam

    return "harness beam " + apache_beam.__version__


def main(output, flags):
    pipeline = beam.Pipeline(options=PipelineOptions(flags))
    stopwords = pipeline | "Stopwords" >> beam.Create(STOPWORDS)
    counts = (
        pipeline
        | "Lines" >> beam.Create(LINES)
        | beam.ParDo(CountWords(), beam.pvalue.AsList(stopwords))
        | beam.combiners.Count.PerElement()
        | beam.MapTuple(lambda word, count: f"{word}: {count}")
    )
    version = pipeline | "One" >> beam.Create([None]) | beam.Map(harness_version)
    _ = (counts, version) | beam.Flatten() | beam.io.WriteToText(output, shard_name_template="")
    result = pipeline.run()
    state = result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("words"))["counters"]
    print(
        json.dumps(
            {
                "state": str(state),
                "words": [counter.committed for counter in counters],
                "job_id": getattr(result, "_job_id", None),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
