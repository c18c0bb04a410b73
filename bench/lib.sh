# Helpers shared by the benchmark scripts (sourced; expects $FACTS to name the facts file).

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fact() { printf '%s\t%s\n' "$1" "$2" >> "$FACTS"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
cpu_ticks() { head -n1 /proc/stat; } # "cpu user nice system idle iowait irq softirq steal ..."
# cpu_use BEFORE AFTER: the whole machine's CPU use between two cpu_ticks samples.
cpu_use() {
    printf '%s\n%s\n' "$1" "$2" | awk '
        { for (i = 2; i <= 9; i++) v[NR, i] = $i }
        END {
            for (i = 2; i <= 9; i++) { d[i] = v[2, i] - v[1, i]; t += d[i] }
            if (t == 0) t = 1
            printf "busy %.0f%%, iowait %.0f%%, steal %.0f%% (of all CPUs)",
                100 * (d[2] + d[3] + d[4] + d[7] + d[8]) / t, 100 * d[6] / t, 100 * d[9] / t
        }'
}
# Processes other than this one using >= 5% of a CPU now (top's second sample, over 2 s).
busy() { top -b -n 2 -d 2 -w 200 | awk '/^top -/ { n++ } n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 5 { printf "%s %s%%; ", $12, $9 }'; }
drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}
warm() { tar -cf - -C "$1" . | cat > /dev/null; }
