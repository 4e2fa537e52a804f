<?php
/**
 * A stand-in for a Workerman worker, for tests/php_helper.rs: a plain PHP HTTP server (no
 * Workerman) that registers itself with tideway through examples/workerman/TidewayRegistration.php,
 * heartbeats from its stream_select loop, and on SIGTERM drains, deregisters and exits 0. On
 * SIGUSR1 or SIGUSR2 (Workerman's reload signals) it does what a Workerman worker process does
 * on a reload with the helper (examples/workerman/start.php): reloading(), then stop(), which
 * ends nothing (the registration and the secret file stay for the next process), and exits 0.
 *
 *   php tests/php/worker.php [port]
 *
 * Environment: WORKER_ID (default php-1), WORKER_PORT (default 0: any free port, or argv[1]),
 * TIDEWAY_ADMIN, TIDEWAY_REGISTER_TOKEN, TIDEWAY_ADVERTISE (default: the bound address),
 * TIDEWAY_TTL, TIDEWAY_HEARTBEAT_EVERY, TIDEWAY_DRAIN_WAIT, TIDEWAY_SECRET_FILE (see the helper).
 *
 * Every HTTP request is answered {"id":"<WORKER_ID>"} with Connection: close.
 *
 * stdout, one event a line, for the test to wait on:
 *   listening <ip:port>
 *   stop-on sigterm|stdin          (stdin: without pcntl, a line "stop" or EOF stops it)
 *   registered <id> <status> [new-secret]
 *   heartbeat <status>
 *   lapsed <id> <error>
 *   drained <json>
 *   deregistered <status>
 *   reload <id> kept ...           (a reload: nothing ended)
 *   exit 0
 * (and register_failed, heartbeat_failed, drain_failed with a status and tideway's error).
 */

require_once __DIR__ . '/../../examples/workerman/TidewayRegistration.php';

function out(string $line): void
{
    fwrite(STDOUT, $line . "\n");
    fflush(STDOUT);
}

$env = static function (string $name, string $default = ''): string {
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
};

$id = $env('WORKER_ID', 'php-1');
$port = (int)($argv[1] ?? $env('WORKER_PORT', '0'));

$server = stream_socket_server("tcp://127.0.0.1:$port", $errno, $errstr);
if ($server === false) {
    fwrite(STDERR, "cannot listen on 127.0.0.1:$port: $errstr\n");
    exit(1);
}
stream_set_blocking($server, false);
$bound = stream_socket_get_name($server, false);
out("listening $bound");

$stop = false;
$reload = false;
if (function_exists('pcntl_async_signals') && function_exists('pcntl_signal')) {
    pcntl_async_signals(true);
    $onSignal = static function (int $signal) use (&$stop, &$reload): void {
        $reload = $reload || $signal === SIGUSR1 || $signal === SIGUSR2;
        $stop = true;
    };
    pcntl_signal(SIGTERM, $onSignal);
    pcntl_signal(SIGINT, $onSignal);
    pcntl_signal(SIGUSR1, $onSignal);
    pcntl_signal(SIGUSR2, $onSignal);
    $stdin = null;
    out('stop-on sigterm');
} else {
    $stdin = STDIN;
    stream_set_blocking($stdin, false);
    out('stop-on stdin');
}

$registration = TidewayRegistration::fromEnv([
    'addr' => $env('TIDEWAY_ADVERTISE', $bound),
    'id' => $id,
    'log' => static function (string $event, string $detail): void {
        out(rtrim("$event $detail"));
    },
]);
// Registers (heartbeat() registers while not registered, so a refused first try is retried).
$registration->heartbeat();
$every = $registration->heartbeatEvery();
$nextBeat = microtime(true) + $every;

$body = json_encode(['id' => $id]);
$response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " . strlen($body)
    . "\r\nConnection: close\r\n\r\n" . $body;

/** @var array<int, array{0: resource, 1: string}> $clients socket and what it sent so far */
$clients = [];
while (!$stop) {
    $read = [$server];
    foreach ($clients as [$sock]) {
        $read[] = $sock;
    }
    if ($stdin !== null) {
        $read[] = $stdin;
    }
    $write = $except = null;
    $wait = max(0.0, min(0.2, $nextBeat - microtime(true)));
    // A signal interrupts the select (EINTR, a warning): silenced, the loop checks $stop.
    $ready = @stream_select($read, $write, $except, 0, (int)($wait * 1e6));
    if ($ready === false) {
        $read = [];
    }
    foreach ($read as $sock) {
        if ($sock === $server) {
            $conn = @stream_socket_accept($server, 0);
            if ($conn !== false) {
                stream_set_blocking($conn, false);
                $clients[(int)$conn] = [$conn, ''];
            }
            continue;
        }
        if ($sock === $stdin) {
            $line = fgets($stdin);
            if ($line === false ? feof($stdin) : trim($line) === 'stop') {
                $stop = true;
            }
            continue;
        }
        $key = (int)$sock;
        $chunk = fread($sock, 65536);
        if ($chunk === '' || $chunk === false) {
            if (feof($sock)) {
                fclose($sock);
                unset($clients[$key]);
            }
            continue;
        }
        $clients[$key][1] .= $chunk;
        if (strpos($clients[$key][1], "\r\n\r\n") !== false) {
            // Small answer, blocking write is fine; then close (Connection: close).
            stream_set_blocking($sock, true);
            fwrite($sock, $response);
            fclose($sock);
            unset($clients[$key]);
        }
    }
    if (!$stop && microtime(true) >= $nextBeat) {
        $registration->heartbeat();
        $nextBeat = microtime(true) + $every;
    }
}

// A stop: drain (waiting, TIDEWAY_DRAIN_WAIT or 30s), then deregister; both print their
// answers. A reload: Workerman's onWorkerReload ran first, so the stop ends nothing.
if ($reload) {
    $registration->reloading();
}
$registration->stop();
foreach ($clients as [$sock]) {
    fclose($sock);
}
fclose($server);
out('exit 0');
exit(0);
