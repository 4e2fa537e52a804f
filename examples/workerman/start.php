<?php
/**
 * A Workerman WebSocket chat (echo + broadcast) that registers itself with tideway.
 *
 *   composer require workerman/workerman
 *   TIDEWAY_ADMIN=http://10.0.0.1:9090 \
 *   TIDEWAY_REGISTER_TOKEN=... \
 *   TIDEWAY_ADVERTISE=10.0.0.5:2346 \
 *   php start.php start
 *
 * Environment:
 *   TIDEWAY_ADMIN            tideway's admin API base URL (required to register)
 *   TIDEWAY_REGISTER_TOKEN   the register token (required to register; never printed)
 *   TIDEWAY_ADVERTISE        the ip:port tideway should connect to; it must reach this
 *                            server's 2346 (default 127.0.0.1:2346)
 *   TIDEWAY_UPSTREAM         tideway upstream to join (default "app")
 *   TIDEWAY_ID               registration id (default hostname-port, see below)
 *   TIDEWAY_TTL              registration TTL in seconds (default 30; heartbeat every TTL/3)
 *   TIDEWAY_DRAIN_WAIT       how long onWorkerStop waits for the drain (default "30s")
 *   TIDEWAY_SECRET_FILE      where the registration's secret is kept (mode 0600), default
 *                            <temp dir>/tideway-<id>.secret: a process 0 that replaces one
 *                            that died without deregistering (a fatal error, a SIGKILL) reads
 *                            it and takes the registration over; without it, its registration
 *                            is refused (403) until the old one lapses, and retried every beat
 * Without TIDEWAY_ADMIN or TIDEWAY_REGISTER_TOKEN the server runs without registering.
 *
 * One registration per listening address. All `count` processes of a Worker serve the same
 * ip:port: without reusePort they accept on one socket the master opened before forking; with
 * reusePort each opens its own socket on the same port and the kernel spreads connections.
 * Either way tideway sees one backend (one address), so only worker id 0 registers, heartbeats,
 * drains and deregisters it; registering from every process would either collide on the
 * address or multiply its weight. The id is therefore hostname-port, without a worker id.
 * Consequence: when process 0 stops or is reloaded (`php start.php reload` restarts processes
 * one at a time), it drains and deregisters the whole address, and its replacement registers
 * it again from onWorkerStart; the other processes keep serving their open connections
 * meanwhile. Run one Worker per address (for example a different port per host or container)
 * if that short gap is not wanted.
 *
 * Stopping: onWorkerStop runs when a process stops, before Workerman closes its listener and
 * connections. The drain there blocks this process (its event loop serves nothing meanwhile)
 * until tideway holds no connection to the address or TIDEWAY_DRAIN_WAIT ends. tideway stops
 * sending new connections at once; open WebSocket connections end when their clients leave or
 * when tideway closes them with 1001 (going away) at the upstream's drain_timeout, so a short
 * drain_timeout on the tideway side bounds the wait. Workerman's master SIGKILLs a process that
 * has not exited `Worker::$stopTimeout` seconds after a (non-graceful) stop, so that is set
 * above the drain wait below; a process killed mid-drain leaves its registration to lapse
 * when its TTL ends. With a graceful stop (`php start.php stop -g`) Workerman keeps serving
 * open connections after onWorkerStop returns, so there the drain does not wait ("0s"):
 * tideway stops sending new connections, and the deregistration removes the backend once
 * tideway holds no connection to it.
 */

use Workerman\Worker;

require_once __DIR__ . '/vendor/autoload.php';
require_once __DIR__ . '/TidewayRegistration.php';

const LISTEN_PORT = 2346;

$env = static function (string $name, string $default = ''): string {
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
};

$drainWait = $env('TIDEWAY_DRAIN_WAIT', '30s');
// Seconds in the drain wait ("30s", "2m", "500ms"): the stop timeout must outlast it.
$drainSeconds = 30;
if (preg_match('/^(\d+)(ms|s|m|h)?$/', trim($drainWait), $m)) {
    $factor = ['ms' => 0.001, 's' => 1, 'm' => 60, 'h' => 3600][$m[2] ?? 's'] ?? 1;
    $drainSeconds = (int)ceil((int)$m[1] * $factor);
}
Worker::$stopTimeout = $drainSeconds + 10;

$worker = new Worker('websocket://0.0.0.0:' . LISTEN_PORT);
$worker->name = 'chat';
$worker->count = 4;
// $worker->reusePort = true;   // either way: one address, one registration (see above)

/** @var TidewayRegistration|null $registration */
$registration = null;

$worker->onWorkerStart = function (Worker $w) use (&$registration, $env) {
    if ($w->id !== 0) {
        return; // one registration per address, held by process 0
    }
    if ($env('TIDEWAY_ADMIN') === '' || $env('TIDEWAY_REGISTER_TOKEN') === '') {
        Worker::log('tideway: TIDEWAY_ADMIN or TIDEWAY_REGISTER_TOKEN unset; not registering');
        return;
    }
    $id = $env('TIDEWAY_ID', gethostname() . '-' . LISTEN_PORT);
    $registration = TidewayRegistration::fromEnv([
        'addr' => $env('TIDEWAY_ADVERTISE', '127.0.0.1:' . LISTEN_PORT),
        'id' => $id,
        // A directory only this user can write to (not a shared /tmp): the secret must stay ours.
        'secret_file' => $env('TIDEWAY_SECRET_FILE', __DIR__ . "/.tideway-$id.secret"),
        'log' => static function (string $event, string $detail) {
            // Event names and statuses only: the token and the secret never reach the log.
            Worker::log("tideway $event $detail");
        },
    ]);
    // Registers now, then heartbeats on a \Workerman\Timer; a failed first registration is
    // retried on every beat.
    $registration->start();
};

$worker->onWorkerStop = function (Worker $w) use (&$registration, $drainWait) {
    if ($registration === null) {
        return;
    }
    $graceful = method_exists(Worker::class, 'getGracefulStop') && Worker::getGracefulStop();
    $registration->stop($graceful ? '0s' : $drainWait);
    $registration = null;
};

$worker->onMessage = function ($connection, $data) use ($worker) {
    if ($data === 'id') {
        $connection->send(gethostname() . '-' . LISTEN_PORT . '#' . $worker->id);
        return;
    }
    // Echo to the sender, and broadcast to the others on this process.
    foreach ($worker->connections as $c) {
        $c->send($data);
    }
};

Worker::runAll();
