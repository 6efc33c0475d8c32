"""The user's side of tests that submit a pipeline from a script of its own with the real Beam
SDK (so `__main__` is the user's), with a tiny package of its own to stage."""

import subprocess
import sys
import textwrap

PACKAGE = "beamjobs_e2e_tinypkg"


def build_sdist(source, dist):
    """A tiny package, built into an sdist here: `shout("a") == "A!"`."""
    (source / PACKAGE).mkdir()
    (source / PACKAGE / "__init__.py").write_text(
        "def shout(word):\n    return word.upper() + '!'\n"
    )
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{PACKAGE}"
            version = "0.1"
            """
        )
    )
    build = "from setuptools import build_meta; print(build_meta.build_sdist(__import__('sys').argv[1]))"
    name = subprocess.run(
        [sys.executable, "-c", build, str(dist)],
        cwd=source,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    return dist / name


# The user's script. Prints the job id, so the test can inspect the job afterwards.
SCRIPT = textwrap.dedent(
    """
    import sys

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to


    class Shout(beam.DoFn):
        def process(self, word):
            import beamjobs_e2e_tinypkg  # only where the staged package was installed

            yield beamjobs_e2e_tinypkg.shout(word)


    def run(argv, build):
        pipeline = beam.Pipeline(options=PipelineOptions(argv))
        build(pipeline)
        result = pipeline.run()
        print("JOB", result._job_id, flush=True)
        print("STATE", result.wait_until_finish(), flush=True)


    if __name__ == "__main__":
        def shout_pipeline(pipeline):
            words = pipeline | beam.Create(["a", "b"]) | beam.ParDo(Shout())
            assert_that(words, equal_to(["A!", "B!"]))

        run(sys.argv[1:], shout_pipeline)
    """
)


def command(tmp_path, script, endpoint, *flags):
    path = tmp_path / "user_pipeline.py"
    path.write_text(script)
    return [
        sys.executable,
        str(path),
        "--runner=PortableRunner",
        f"--job_endpoint={endpoint}",
        *flags,
    ]


def submit(tmp_path, script, endpoint, *flags):
    done = subprocess.run(
        command(tmp_path, script, endpoint, *flags),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = dict(
        line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("JOB", "STATE"))
    )
    assert lines.get("STATE") == "DONE", done.stdout + done.stderr
    return lines["JOB"]
