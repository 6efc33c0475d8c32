// The Beam TypeScript SDK's word count, submitted with LOOPBACK to a Job API endpoint:
//   node wordcount.js ENDPOINT OUTPUT_FILE
// Each count is appended to OUTPUT_FILE by the SDK's own worker (this process, under
// LOOPBACK); then one JSON line is printed: the final state and the job's counters.
const fs = require("fs");
const beam = require("apache-beam");
const { countPerElement } = require("apache-beam/transforms/group_and_combine");
const { PortableRunner } = require("apache-beam/runners/portable_runner/runner");
const { JobState_Enum } = require("apache-beam/proto/beam_job_api");
const { requireForSerialization } = require("apache-beam/serialization");

// Functions that run in the worker say what they capture, and the Node modules they use are
// registered, as the SDK's compiled examples do.
requireForSerialization("fs", fs);

const LINES = ["the cat sat on the mat", "the dog sat", "a cat ran"];

function splitWords(line) {
  return line.split(" ");
}

function writeTo(output) {
  const write = (kv) => {
    fs.appendFileSync(output, `${kv.element}: ${kv.count}\n`);
    return kv;
  };
  write.__closure = () => ({ fs, output });
  return write;
}
writeTo.__closure = () => ({ fs });

async function main(endpoint, output) {
  const runner = new PortableRunner({ jobEndpoint: endpoint, environmentType: "LOOPBACK" });
  const pipeline = (root) => {
    root
      .apply(beam.create(LINES))
      .flatMap(splitWords)
      .apply(countPerElement())
      .map(writeTo(output));
  };
  pipeline.__closure = () => ({ beam, LINES, splitWords, countPerElement, writeTo, output });
  const result = await runner.runAsync(pipeline);
  const state = await result.waitUntilFinish();
  console.log(JSON.stringify({ state: JobState_Enum[state], jobId: result.jobId }));
}

main(process.argv[2], process.argv[3]).then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
