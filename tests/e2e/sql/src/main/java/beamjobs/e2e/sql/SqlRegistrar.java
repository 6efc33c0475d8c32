package beamjobs.e2e.sql;

import java.util.Map;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.extensions.sql.SqlTransform;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.values.PCollection;
import org.apache.beam.sdk.values.PInput;
import org.apache.beam.sdk.values.Row;
import org.checkerframework.checker.nullness.qual.Nullable;

/**
 * Registers Python's SqlTransform URN with Beam's expansion service: the expansion service
 * builds the transform from the external payload's fields (query, dialect, ddl), each through the
 * setter of its name on {@link Configuration}.
 */
public class SqlRegistrar implements ExternalTransformRegistrar {
  static final String URN = "beam:external:java:sql:v1";

  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Map.of(URN, new Builder());
  }

  /** The fields of Python's SqlTransform payload. */
  public static class Configuration {
    String query = "";
    @Nullable String dialect;
    @Nullable String ddl;

    public void setQuery(String query) {
      this.query = query;
    }

    public void setDialect(@Nullable String dialect) {
      this.dialect = dialect;
    }

    public void setDdl(@Nullable String ddl) {
      this.ddl = ddl;
    }
  }

  /** Beam SQL's own transform, with Calcite's planner (the only dialect this module has). */
  public static class Builder
      implements ExternalTransformBuilder<Configuration, PInput, PCollection<Row>> {
    @Override
    public PTransform<PInput, PCollection<Row>> buildExternal(Configuration configuration) {
      if (configuration.dialect != null && !configuration.dialect.equals("calcite")) {
        throw new IllegalArgumentException(
            "only the calcite dialect is available, not " + configuration.dialect);
      }
      SqlTransform transform = SqlTransform.query(configuration.query);
      return configuration.ddl == null ? transform : transform.withDdlString(configuration.ddl);
    }
  }
}
