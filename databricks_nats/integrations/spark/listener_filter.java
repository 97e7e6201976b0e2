// The JVM side of databricks-nats' Spark job listener (integrations/spark/_compat.py compiles it once per
// process with Janino, which Spark ships): it forwards only what the listener needs, one line per execution.
public class DatabricksNatsListenerFilter {
    private volatile java.util.function.Consumer out;
    private final java.util.HashMap actions = new java.util.HashMap();  // RDD actions open
    private final StringBuilder held = new StringBuilder();  // lines not sent yet
    private int count = 0;
    private static final String[] KEYS = {@KEYS@};

    public void setOut(java.util.function.Consumer out) { this.out = out; }

    private static String v(Object o) {
        return o == null ? "" : "=" + o.toString().replace('\u0001', ' ').replace('\u0002', ' ');
    }

    // An execution's lines go to Python in one callback, when it ends (each callback costs ~250 us there).
    private synchronized void send(String line, boolean end) {
        if (count++ > 0) held.append('\u0002');
        held.append(line);
        if (!end && count < 64) return;
        String text = held.toString();
        held.setLength(0);
        count = 0;
        java.util.function.Consumer c = out;
        if (c != null) c.accept(text);
    }

    public void jobStart(Object o) {
        org.apache.spark.scheduler.SparkListenerJobStart e = (org.apache.spark.scheduler.SparkListenerJobStart) o;
        java.util.Properties p = e.properties();
        if (p == null || p.getProperty(KEYS[0]) == null) actions.put(Integer.valueOf(e.jobId()), Boolean.TRUE);
        StringBuilder b = new StringBuilder("J");
        b.append('\u0001').append(e.jobId()).append('\u0001').append(e.time());
        b.append('\u0001').append(e.stageInfos().size());
        for (int i = 0; i < KEYS.length; i++) b.append('\u0001').append(v(p == null ? null : p.getProperty(KEYS[i])));
        send(b.toString(), false);
    }

    public void jobEnd(Object o) {
        org.apache.spark.scheduler.SparkListenerJobEnd e = (org.apache.spark.scheduler.SparkListenerJobEnd) o;
        if (actions.remove(Integer.valueOf(e.jobId())) == null) return;  // inside a SQL execution: its end says it
        send("E\u0001" + e.jobId() + "\u0001" + e.time() + "\u0001" + v(e.jobResult()), true);
    }

    public void other(Object o) {
        if (o instanceof org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart) {
            org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart e =
                (org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart) o;
            send("S\u0001" + e.executionId() + "\u0001" + e.time() + "\u0001" + v(e.description()), false);
        } else if (o instanceof org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd) {
            org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd e =
                (org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionEnd) o;
            scala.Option m = e.errorMessage();
            String error = v(m.isDefined() ? m.get() : null);
            send("F\u0001" + e.executionId() + "\u0001" + e.time() + "\u0001" + error, true);
        }
    }
}
