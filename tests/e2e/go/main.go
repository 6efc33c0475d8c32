// A word count as a Beam Go SDK user writes one: a counter, a log line and a Count (a
// GroupByKey), its counts written to --output. --mode=slow makes a job that counts until
// cancelled, --mode=fail one whose DoFn fails. How the job ended is printed on the last lines
// ("JOB id" and "COUNTER words=…", or "ERROR …"), for the test that ran it
// (tests/e2e/test_go_sdk.py).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/textio"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/log"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
)

// Failure is the failing DoFn's own words.
const Failure = "this DoFn fails on purpose"

var (
	output = flag.String("output", "", "where the counts go (a file, one \"word: count\" per line)")
	mode   = flag.String("mode", "count", "count, slow or fail")

	wordPattern = regexp.MustCompile(`[a-z]+`)
	words       = beam.NewCounter("wordcount", "words")
)

type splitFn struct {
	Mode string `json:"mode"`
}

func (f *splitFn) ProcessElement(ctx context.Context, line string, emit func(string)) error {
	switch f.Mode {
	case "fail":
		return errors.New(Failure)
	case "slow":
		// A bundle that never ends: its counter rises only through progress reports.
		for {
			words.Inc(ctx, 1)
			time.Sleep(100 * time.Millisecond)
		}
	}
	log.Infof(ctx, "splitting a line of %d characters", len(line))
	for _, word := range wordPattern.FindAllString(line, -1) {
		words.Inc(ctx, 1)
		emit(word)
	}
	return nil
}

func formatFn(word string, count int) string {
	return fmt.Sprintf("%s: %d", word, count)
}

func init() {
	register.DoFn3x1[context.Context, string, func(string), error](&splitFn{})
	register.Emitter1[string]()
	register.Function2x1(formatFn)
}

func main() {
	flag.Parse()
	beam.Init()
	pipeline, scope := beam.NewPipelineWithRoot()
	lines := beam.Create(scope, "cat sat", "cat ran", "dog sat down")
	split := beam.ParDo(scope, &splitFn{Mode: *mode}, lines)
	counted := stats.Count(scope, split)
	textio.Write(scope, *output, beam.ParDo(scope, formatFn, counted))

	result, err := beamx.RunWithMetrics(context.Background(), pipeline)
	if err != nil {
		fmt.Println("ERROR " + strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	// Go's runner returns no error for DONE and CANCELLED alike: the test reads which it was.
	fmt.Println("JOB " + result.JobID())
	for _, counter := range result.Metrics().AllMetrics().Counters() {
		fmt.Printf("COUNTER %s=%d\n", counter.Key.Name, counter.Result())
	}
}
