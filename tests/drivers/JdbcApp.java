// The PostgreSQL JDBC driver through pgrouter with prepareThreshold=1: every
// PreparedStatement becomes a named server-side statement from its first
// execution. Run by tests/drivers.rs (java JdbcApp.java, the driver jar from
// Debian's libpostgresql-jdbc-java on the class path) with DATABASE_URL,
// WORKERS and ROUNDS set; each worker thread has its own connection and the
// router lends fewer server connections. Prints "ok <rows>" or fails.

import java.math.BigDecimal;
import java.net.URI;
import java.sql.*;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.*;
import java.util.concurrent.*;

public class JdbcApp {
    static final int WORKERS = Integer.parseInt(System.getenv().getOrDefault("WORKERS", "8"));
    static final int ROUNDS = Integer.parseInt(System.getenv().getOrDefault("ROUNDS", "30"));
    static final OffsetDateTime T0 = OffsetDateTime.of(2026, 1, 2, 3, 4, 5, 0, ZoneOffset.UTC);

    static Connection connect() throws Exception {
        URI u = new URI(System.getenv("DATABASE_URL"));
        String[] auth = u.getUserInfo().split(":", 2);
        Properties p = new Properties();
        p.setProperty("user", auth[0]);
        p.setProperty("password", auth[1]);
        p.setProperty("prepareThreshold", "1");
        String url = "jdbc:postgresql://" + u.getHost() + ":" + u.getPort() + u.getPath();
        return DriverManager.getConnection(url, p);
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void expectState(String state, Callable<?> f) throws Exception {
        try {
            f.call();
        } catch (SQLException e) {
            check(state.equals(e.getSQLState()), "expected SQLSTATE " + state + ", got " + e.getSQLState() + ": " + e.getMessage());
            return;
        }
        throw new AssertionError("expected SQLSTATE " + state + ", the statement succeeded");
    }

    static void worker(int w) throws Exception {
        try (Connection c = connect();
             PreparedStatement insert = c.prepareStatement("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
             PreparedStatement select = c.prepareStatement("SELECT id, worker, name, price, at, flag, blob, note FROM items WHERE id = ?");
             PreparedStatement bump = c.prepareStatement("UPDATE items SET price = price + ? WHERE id = ?");
             PreparedStatement div = c.prepareStatement("SELECT 1 / ?");
             PreparedStatement count = c.prepareStatement("SELECT count(*) FROM items WHERE worker = ?")) {
            for (int i = 0; i < ROUNDS; i++) {
                int id = w * 10000 + i;
                String name = "naïve ✓ " + w + "-" + i;
                BigDecimal price = new BigDecimal("12.34").add(BigDecimal.valueOf(i));
                OffsetDateTime at = T0.plusSeconds(i);
                byte[] blob = {0, 1, 2, (byte) 255, (byte) i};
                c.setAutoCommit(true);
                insert.setInt(1, id);
                insert.setInt(2, w);
                insert.setString(3, name);
                insert.setBigDecimal(4, price);
                insert.setObject(5, at);
                insert.setBoolean(6, i % 2 == 0);
                insert.setBytes(7, blob);
                insert.setNull(8, Types.VARCHAR);
                check(insert.executeUpdate() == 1, "insert count");
                select.setInt(1, id);
                try (ResultSet rs = select.executeQuery()) {
                    check(rs.next(), "row " + id + " not found");
                    check(rs.getInt(1) == id && rs.getInt(2) == w && name.equals(rs.getString(3)), "identity of " + id);
                    check(price.compareTo(rs.getBigDecimal(4)) == 0, "price " + rs.getBigDecimal(4));
                    check(at.isEqual(rs.getObject(5, OffsetDateTime.class)), "at " + rs.getObject(5, OffsetDateTime.class));
                    check(rs.getBoolean(6) == (i % 2 == 0), "flag");
                    check(Arrays.equals(blob, rs.getBytes(7)), "blob");
                    check(rs.getString(8) == null, "note");
                }

                c.setAutoCommit(false);
                bump.setBigDecimal(1, BigDecimal.ONE);
                bump.setInt(2, id);
                bump.executeUpdate();
                try (ResultSet rs = select.executeQuery()) {
                    check(rs.next() && rs.getBigDecimal(4).compareTo(price.add(BigDecimal.ONE)) == 0, "price after update");
                }
                c.commit();

                expectState("23505", () -> insert.executeUpdate());
                expectState("25P02", () -> select.executeQuery());
                c.rollback();

                c.setAutoCommit(true);
                div.setInt(1, 0);
                expectState("22012", () -> div.executeQuery());
                count.setInt(1, w);
                try (ResultSet rs = count.executeQuery()) {
                    check(rs.next() && rs.getInt(1) == i + 1, "worker " + w + " row count after round " + i);
                }
            }
            // The driver really used server-side statements.
            check(insert.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(), "not server-prepared");
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("DROP TABLE IF EXISTS items");
            s.execute("CREATE TABLE items (id int PRIMARY KEY, worker int, name text, price numeric(10,2),"
                    + " at timestamptz, flag bool, blob bytea, note text)");
        }
        ExecutorService pool = Executors.newFixedThreadPool(WORKERS);
        List<Future<?>> futures = new ArrayList<>();
        for (int w = 0; w < WORKERS; w++) {
            final int worker = w;
            futures.add(pool.submit(() -> { worker(worker); return null; }));
        }
        List<String> failures = new ArrayList<>();
        for (int w = 0; w < WORKERS; w++) {
            try {
                futures.get(w).get();
            } catch (ExecutionException e) {
                failures.add("worker " + w + ": " + e.getCause());
            }
        }
        pool.shutdown();
        if (!failures.isEmpty()) {
            System.err.println(String.join("\n", failures));
            System.exit(1);
        }
        try (Connection c = connect(); Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT count(*), sum(price) FROM items")) {
            rs.next();
            int n = rs.getInt(1);
            BigDecimal want = BigDecimal.ZERO;
            for (int i = 0; i < ROUNDS; i++) want = want.add(new BigDecimal("13.34").add(BigDecimal.valueOf(i)));
            want = want.multiply(BigDecimal.valueOf(WORKERS));
            if (n != WORKERS * ROUNDS || want.compareTo(rs.getBigDecimal(2)) != 0) {
                System.err.println("table has " + n + " rows summing " + rs.getBigDecimal(2) + ", want " + (WORKERS * ROUNDS) + " / " + want);
                System.exit(1);
            }
            System.out.println("ok " + n);
        }
    }
}
