package beamjobs.e2e;

import java.util.Arrays;
import java.util.List;
import org.apache.beam.sdk.Pipeline;
import org.apache.beam.sdk.PipelineResult;
import org.apache.beam.sdk.io.TextIO;
import org.apache.beam.sdk.metrics.Counter;
import org.apache.beam.sdk.metrics.MetricNameFilter;
import org.apache.beam.sdk.metrics.MetricQueryResults;
import org.apache.beam.sdk.metrics.MetricResult;
import org.apache.beam.sdk.metrics.Metrics;
import org.apache.beam.sdk.metrics.MetricsFilter;
import org.apache.beam.sdk.options.Default;
import org.apache.beam.sdk.options.Description;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.transforms.Create;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.GroupByKey;
import org.apache.beam.sdk.transforms.MapElements;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.View;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PCollectionView;
import org.apache.beam.sdk.values.TypeDescriptors;
import org.joda.time.Duration;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A word count as a Beam user writes one: a side input (the words not to count), a counter, a
 * log line and a GroupByKey, its counts written to --output. --mode=slow makes a job that runs
 * until cancelled; --mode=fail one whose DoFn throws. What the job ended as is printed on the
 * lines ("STATE …", "COUNTER words=… step", "ERROR …"), for the test that ran it.
 */
public class WordCount {
  private static final Logger LOG = LoggerFactory.getLogger(WordCount.class);
  static final String FAILURE = "this DoFn throws on purpose";

  public interface Options extends PipelineOptions {
    @Description("Where the counts go (a file, one \"word: count\" per line)")
    String getOutput();

    void setOutput(String value);

    @Description("count, slow or fail")
    @Default.String("count")
    String getMode();

    void setMode(String value);
  }

  static class SplitWords extends DoFn<String, String> {
    private final Counter words = Metrics.counter("wordcount", "words");
    private final PCollectionView<List<String>> stopWords;
    private final String mode;

    SplitWords(PCollectionView<List<String>> stopWords, String mode) {
      this.stopWords = stopWords;
      this.mode = mode;
    }

    @ProcessElement
    public void processElement(ProcessContext context) throws InterruptedException {
      if (mode.equals("fail")) {
        throw new IllegalStateException(FAILURE);
      }
      if (mode.equals("slow")) {
        Thread.sleep(600_000);
      }
      List<String> skipped = context.sideInput(stopWords);
      LOG.info("splitting a line of {} characters", context.element().length());
      for (String word : context.element().split("[^a-z]+")) {
        if (!word.isEmpty() && !skipped.contains(word)) {
          words.inc();
          context.output(word);
        }
      }
    }
  }

  public static void main(String[] args) {
    Options options = PipelineOptionsFactory.fromArgs(args).withValidation().as(Options.class);
    Pipeline pipeline = Pipeline.create(options);
    PCollectionView<List<String>> stopWords =
        pipeline.apply("StopWords", Create.of("the", "a")).apply(View.asList());
    pipeline
        .apply("Lines", Create.of(Arrays.asList("the cat sat", "a cat ran", "the dog sat down")))
        .apply(
            "Split",
            ParDo.of(new SplitWords(stopWords, options.getMode())).withSideInputs(stopWords))
        .apply(
            "Pair",
            MapElements.into(
                    TypeDescriptors.kvs(TypeDescriptors.strings(), TypeDescriptors.integers()))
                .via((String word) -> KV.of(word, 1)))
        .apply(GroupByKey.create())
        .apply(
            "Format",
            MapElements.into(TypeDescriptors.strings())
                .via(
                    (KV<String, Iterable<Integer>> counted) -> {
                      int total = 0;
                      for (int one : counted.getValue()) {
                        total += one;
                      }
                      return counted.getKey() + ": " + total;
                    }))
        .apply(TextIO.write().to(options.getOutput()).withoutSharding());

    PipelineResult result = pipeline.run();
    if (options.getMode().equals("slow")) {
      while (result.getState() != PipelineResult.State.RUNNING) {
        result.waitUntilFinish(Duration.millis(200));
      }
      System.out.println("RUNNING");
      try {
        System.out.println("STATE " + result.cancel());
        System.out.println("STATE " + result.waitUntilFinish(Duration.standardSeconds(60)));
      } catch (java.io.IOException error) {
        System.out.println("ERROR " + error);
      }
      return;
    }
    try {
      System.out.println("STATE " + result.waitUntilFinish());
    } catch (RuntimeException error) {
      System.out.println("STATE " + result.getState());
      System.out.println("ERROR " + error.getClass().getName() + ": " + error.getMessage());
      return;
    }
    MetricQueryResults metrics =
        result
            .metrics()
            .queryMetrics(
                MetricsFilter.builder()
                    .addNameFilter(MetricNameFilter.named("wordcount", "words"))
                    .build());
    for (MetricResult<Long> counter : metrics.getCounters()) {
      System.out.println(
          "COUNTER "
              + counter.getName().getName()
              + "="
              + counter.getAttempted()
              + " "
              + counter.getKey().stepName());
    }
  }
}
