<?php
/**
 * TidewayRegistration: registers one listening address with a tideway admin API, keeps the
 * registration alive with heartbeats, and on stop drains it (waiting) and deregisters it; on
 * a reload it ends nothing, and the next process takes the registration over.
 *
 * One file, no dependencies: PHP 7.4+ / 8.x, HTTP/1.1 on PHP's own socket streams (no curl).
 * An https:// admin URL needs the openssl extension.
 *
 * Workerman use (see start.php beside this file):
 *
 *     $worker->onWorkerStart = function () use (&$reg) {
 *         $reg = TidewayRegistration::fromEnv(['addr' => '10.0.0.5:2346', 'id' => 'web-1-2346',
 *             'secret_file' => '/run/tideway/secret']);
 *         $reg->start();      // register now, then heartbeat on a \Workerman\Timer
 *     };
 *     $worker->onWorkerReload = function (Worker $w) use (&$reg) {
 *         if ($w->reloadable) {
 *             $reg->reloading(); // `reload [-g]`: the stop that follows is not the end
 *         }
 *     };
 *     $worker->onWorkerStop = function () use (&$reg) {
 *         $reg->stop();       // a stop: drain (waiting up to drainWait), then deregister;
 *                             // a reload: nothing (see reloading())
 *     };
 *
 * Reload or stop: Workerman 4.x (Worker.php of v4.2.1) tells its worker processes apart by
 * signal only. A worker process that gets SIGUSR1 (`reload`) or SIGUSR2 (`reload -g`) runs
 * Worker::reload(), which calls onWorkerReload and then, for a reloadable worker,
 * Worker::stopAll(), which sets the status to STATUS_SHUTDOWN and calls onWorkerStop. A stop
 * (SIGINT, SIGTERM, SIGQUIT) calls stopAll() directly. STATUS_RELOADING is set in the master
 * process only, so inside onWorkerStop Worker::getStatus() is STATUS_SHUTDOWN either way:
 * onWorkerReload, run just before, is what says "reload". Hence reloading().
 *
 * Without Workerman, call register() (or heartbeat(), which registers when not registered
 * yet) and then heartbeat() every `heartbeatEvery` seconds from your own loop, and stop() on
 * the way out.
 *
 * The API it speaks (tideway's admin listener, register token as the bearer):
 *   POST   /v1/upstreams/{u}/backends                   register (201 + secret) or refresh (200)
 *   PUT    /v1/upstreams/{u}/backends/{id}/heartbeat    200; 404 when unknown or lapsed
 *   POST   /v1/upstreams/{u}/backends/{id}/drain?wait=  {"active_connections":n,"drained":bool}
 *   DELETE /v1/upstreams/{u}/backends/{id}              202
 * A new registration's answer carries a secret, returned once; every later call for that
 * registration sends it in X-Registration-Secret. A heartbeat answered 404 (the registration
 * lapsed, or was removed) is followed by registering again with the same id and address and
 * the secret; when that makes a new registration, its new secret is adopted.
 *
 * Neither the token nor the secret is ever printed or logged by this class.
 *
 * With `secret_file` set, the secret is also kept in that file (mode 0600) and read back at
 * construction, so the next process on the same address takes the registration over at once
 * (200, the same registration) instead of being refused (403, "not made with this secret")
 * until it lapses: the process a reload starts, or one that replaces a process which died
 * without deregistering (a crash, a SIGKILL). There is no default path: without the option
 * the secret lives in this process only. The directory must be writable by this user (on a
 * read-only root filesystem, a volume such as an emptyDir); a failed write is reported as the
 * event `secret_file_failed`. A deregistration removes the file.
 *
 * Every HTTP call blocks the calling process for at most `timeout` seconds (drain: up to the
 * drain wait plus `timeout`), all of it together: one deadline is set when the call starts, and
 * the connect, each write and each read get only the time left (name resolution is not
 * bounded: give `admin` as an IP address). In a Workerman worker the event loop waits too.
 *
 * `secret_file` must be a regular file owned by the process's effective user and readable by
 * nobody else; a symlink, a file of another user, or one others may read is refused with an
 * InvalidArgumentException at construction.
 */
final class TidewayRegistration
{
    /** @var string admin base URL, e.g. http://10.0.0.1:9090 */
    private $admin;
    /** @var string */
    private $upstream;
    /** @var string register token (never logged) */
    private $token;
    /** @var string advertised ip:port */
    private $addr;
    /** @var string */
    private $id;
    /** @var int */
    private $weight;
    /** @var int registration TTL, seconds */
    private $ttl;
    /** @var float seconds between heartbeats */
    private $heartbeatEvery;
    /** @var string drain wait, as tideway reads it ("30s", "500ms", "0s") */
    private $drainWait;
    /** @var float seconds for one whole HTTP call (connect, write and read) */
    private $timeout;
    /** @var callable|null function (string $event, string $detail): void */
    private $log;
    /** @var string|null where the secret is kept between processes */
    private $secretFile;

    /** @var string|null the registration's secret (never logged) */
    private $secret = null;
    /** @var bool whether tideway has answered a registration of ours with 2xx */
    private $registered = false;
    /** @var int|null Workerman timer id */
    private $timerId = null;
    /** @var bool whether this process stops for a reload (see reloading()) */
    private $reloading = false;

    /**
     * Options:
     *   admin (required)    tideway admin base URL, "http://host:port"
     *   token (required)    the register token (TIDEWAY_REGISTER_TOKEN on tideway's side)
     *   addr (required)     the address tideway should connect to, "ip:port" ("[v6]:port")
     *   upstream            default "app"
     *   id                  default: tideway's own default, "ip:port" (IPv6 without brackets)
     *   weight              default 1
     *   ttl                 seconds, default 30 (tideway accepts 1 s to 24 h)
     *   heartbeat_every     seconds, default ttl / 3
     *   drain_wait          default "30s"; "0s" drains without waiting
     *   timeout             seconds for a whole HTTP call, default 5
     *   secret_file         keep the secret in this file (0600) across processes; default none
     *   log                 callable (string $event, string $detail): void; default: STDERR
     *
     * @param array<string, mixed> $options
     */
    public function __construct(array $options)
    {
        foreach (['admin', 'token', 'addr'] as $required) {
            if (!isset($options[$required]) || (string)$options[$required] === '') {
                throw new InvalidArgumentException("TidewayRegistration: option '$required' is required");
            }
        }
        $this->admin = rtrim((string)$options['admin'], '/');
        $parts = parse_url($this->admin);
        if (!is_array($parts) || !isset($parts['host'])
            || !in_array($parts['scheme'] ?? '', ['http', 'https'], true)) {
            throw new InvalidArgumentException(
                "TidewayRegistration: option 'admin' must be an http:// or https:// URL"
            );
        }
        $this->token = (string)$options['token'];
        $this->addr = (string)$options['addr'];
        $this->upstream = isset($options['upstream']) ? (string)$options['upstream'] : 'app';
        $this->id = isset($options['id']) && $options['id'] !== ''
            ? (string)$options['id']
            : str_replace(['[', ']'], '', $this->addr);
        $this->weight = isset($options['weight']) ? (int)$options['weight'] : 1;
        $this->ttl = isset($options['ttl']) ? max(1, (int)$options['ttl']) : 30;
        $this->heartbeatEvery = isset($options['heartbeat_every'])
            ? max(0.1, (float)$options['heartbeat_every'])
            : max(1.0, $this->ttl / 3);
        $this->drainWait = isset($options['drain_wait']) ? (string)$options['drain_wait'] : '30s';
        $this->timeout = isset($options['timeout']) ? (float)$options['timeout'] : 5.0;
        $this->log = isset($options['log']) && is_callable($options['log']) ? $options['log'] : null;
        $this->secretFile = isset($options['secret_file']) && $options['secret_file'] !== ''
            ? (string)$options['secret_file']
            : null;
        if ($this->secretFile !== null) {
            $kept = self::readSecretFile($this->secretFile);
            $this->secret = $kept === '' ? null : $kept;
        }
    }

    /**
     * The secret kept in `$path` ('' when there is no file yet). Only a regular file (not a
     * symlink) owned by this process's effective user and readable by nobody else is trusted;
     * anything else is refused. The checks are made on the opened file, and it must be the one
     * the path named without following a link.
     */
    private static function readSecretFile(string $path): string
    {
        $refuse = static function (string $why) use ($path): InvalidArgumentException {
            return new InvalidArgumentException("TidewayRegistration: secret_file '$path' $why; refusing it");
        };
        clearstatcache(true, $path);
        $link = @lstat($path);
        if ($link === false) {
            return '';
        }
        if (is_link($path)) {
            throw $refuse('is a symlink');
        }
        $fh = @fopen($path, 'rb');
        $st = $fh === false ? false : fstat($fh);
        if ($st === false) {
            if (is_resource($fh)) {
                fclose($fh);
            }
            throw $refuse('cannot be read');
        }
        try {
            if ($st['dev'] !== $link['dev'] || $st['ino'] !== $link['ino']) {
                throw $refuse('changed while it was opened');
            }
            if (($st['mode'] & 0170000) !== 0100000) {
                throw $refuse('is not a regular file');
            }
            $me = self::effectiveUid();
            if ($st['uid'] !== $me) {
                throw $refuse("is owned by uid {$st['uid']}, not by this process's user (uid $me)");
            }
            if (($st['mode'] & 0077) !== 0) {
                throw $refuse(sprintf('may be read by others (mode %o; it must be 0600)', $st['mode'] & 0777));
            }
            return trim((string)stream_get_contents($fh));
        } finally {
            fclose($fh);
        }
    }

    /** This process's effective uid (without the posix extension: the owner of a new file). */
    private static function effectiveUid(): int
    {
        if (function_exists('posix_geteuid')) {
            return posix_geteuid();
        }
        $probe = tmpfile();
        $st = $probe === false ? false : fstat($probe);
        if ($probe !== false) {
            fclose($probe);
        }
        if ($st === false) {
            throw new RuntimeException('TidewayRegistration: cannot tell this process\'s user (no posix extension, no temporary file)');
        }
        return $st['uid'];
    }

    /**
     * From the environment: TIDEWAY_ADMIN, TIDEWAY_REGISTER_TOKEN, TIDEWAY_ADVERTISE (addr),
     * and optionally TIDEWAY_UPSTREAM, TIDEWAY_ID, TIDEWAY_WEIGHT, TIDEWAY_TTL,
     * TIDEWAY_HEARTBEAT_EVERY, TIDEWAY_DRAIN_WAIT, TIDEWAY_TIMEOUT, TIDEWAY_SECRET_FILE.
     * `$options` wins over them.
     *
     * @param array<string, mixed> $options
     */
    public static function fromEnv(array $options = []): self
    {
        $env = [
            'admin' => 'TIDEWAY_ADMIN',
            'token' => 'TIDEWAY_REGISTER_TOKEN',
            'addr' => 'TIDEWAY_ADVERTISE',
            'upstream' => 'TIDEWAY_UPSTREAM',
            'id' => 'TIDEWAY_ID',
            'weight' => 'TIDEWAY_WEIGHT',
            'ttl' => 'TIDEWAY_TTL',
            'heartbeat_every' => 'TIDEWAY_HEARTBEAT_EVERY',
            'drain_wait' => 'TIDEWAY_DRAIN_WAIT',
            'timeout' => 'TIDEWAY_TIMEOUT',
            'secret_file' => 'TIDEWAY_SECRET_FILE',
        ];
        foreach ($env as $key => $name) {
            $value = getenv($name);
            if (!array_key_exists($key, $options) && $value !== false && $value !== '') {
                $options[$key] = $value;
            }
        }
        return new self($options);
    }

    public function id(): string
    {
        return $this->id;
    }

    public function addr(): string
    {
        return $this->addr;
    }

    public function isRegistered(): bool
    {
        return $this->registered;
    }

    public function heartbeatEvery(): float
    {
        return $this->heartbeatEvery;
    }

    /**
     * Register now and, inside a Workerman worker, heartbeat on a \Workerman\Timer. A failed
     * first registration is retried by the timer (heartbeat() registers while unregistered).
     * Returns whether the registration was accepted now.
     */
    public function start(): bool
    {
        $ok = $this->register();
        if ($this->timerId === null && class_exists('\Workerman\Timer')) {
            $this->timerId = \Workerman\Timer::add($this->heartbeatEvery, function () {
                $this->heartbeat();
            });
        }
        return $ok;
    }

    /**
     * POST the registration (id, addr, weight, ttl), with the secret when one is held: a new
     * registration (201) hands out a secret, which is kept; a refresh of ours answers 200.
     * Returns whether tideway accepted it.
     */
    public function register(): bool
    {
        $status = $this->registerStatus();
        return $status >= 200 && $status < 300;
    }

    /** register(), returning the HTTP status (0 when tideway could not be reached). */
    private function registerStatus(): int
    {
        $body = json_encode([
            'addr' => $this->addr,
            'id' => $this->id,
            'weight' => $this->weight,
            'ttl' => $this->ttl,
        ]);
        [$status, $answer] = $this->call('POST', '', $body);
        if ($status >= 200 && $status < 300) {
            $renewed = false;
            if (is_array($answer) && isset($answer['secret']) && is_string($answer['secret'])) {
                $renewed = $this->secret !== null;
                $this->secret = $answer['secret'];
                $this->keepSecret();
            }
            $this->registered = true;
            $this->emit('registered', $this->id . ' ' . $status . ($renewed ? ' new-secret' : ''));
        } else {
            $this->emit('register_failed', $status . ' ' . $this->errorOf($answer));
        }
        return $status;
    }

    /**
     * One heartbeat: PUT .../heartbeat. A 404 (lapsed or removed) registers again with the same
     * id and address and the secret; while not registered at all, it registers. Returns the
     * heartbeat's HTTP status (0 when tideway could not be reached; the registration's status
     * when it registered instead).
     */
    public function heartbeat(): int
    {
        if (!$this->registered || $this->secret === null) {
            return $this->registerStatus();
        }
        [$status, $answer] = $this->call('PUT', '/' . rawurlencode($this->id) . '/heartbeat');
        $this->emit('heartbeat', (string)$status);
        if ($status === 404) {
            $this->emit('lapsed', $this->id . ' ' . $this->errorOf($answer));
            $this->register();
        } elseif ($status === 0 || $status >= 400) {
            // Kept as is: tried again on the next beat.
            $this->emit('heartbeat_failed', $status . ' ' . $this->errorOf($answer));
        }
        return $status;
    }

    /**
     * Drain: tideway sends this address no new connections, and the call returns when tideway
     * holds no connection to it or the wait ends. Returns tideway's answer
     * (["active_connections" => n, "drained" => bool]) or null when it failed.
     *
     * @return array<string, mixed>|null
     */
    public function drain(?string $wait = null): ?array
    {
        $wait = $wait ?? $this->drainWait;
        $seconds = self::seconds($wait);
        [$status, $answer] = $this->call(
            'POST',
            '/' . rawurlencode($this->id) . '/drain?wait=' . rawurlencode($wait),
            null,
            $seconds + $this->timeout
        );
        if ($status === 200 && is_array($answer)) {
            $this->emit('drained', (string)json_encode($answer));
            return $answer;
        }
        $this->emit('drain_failed', $status . ' ' . $this->errorOf($answer));
        return null;
    }

    /** DELETE the registration. Returns the HTTP status (202 when accepted, 0 unreachable). */
    public function deregister(): int
    {
        [$status, $answer] = $this->call('DELETE', '/' . rawurlencode($this->id));
        $this->registered = false;
        if ($status === 202 && $this->secretFile !== null && is_file($this->secretFile)) {
            @unlink($this->secretFile);
        }
        $this->emit('deregistered', (string)$status . ($status >= 400 ? ' ' . $this->errorOf($answer) : ''));
        return $status;
    }

    /**
     * This process stops for a reload, not for good: call it from Workerman's onWorkerReload
     * (for a reloadable worker: Workerman stops the process right after). The stop() that
     * follows then ends nothing: no drain, no deregistration, the secret file kept for the
     * process the reload starts, which reads it and refreshes this same registration. The
     * heartbeat timer goes on while this process lives: after `reload -g` (SIGUSR2) Workerman
     * keeps serving the open connections of a stopping process until they end, and the
     * registration must not lapse meanwhile. reloading(false) takes it back (a stop that
     * comes while such a process still serves).
     */
    public function reloading(bool $reloading = true): void
    {
        $this->reloading = $reloading;
    }

    /**
     * On the way out: stop the heartbeat timer, drain (waiting up to the drain wait), then
     * deregister. Returns ["drain" => answer|null, "deregister" => status], or null when there
     * was no registration to end, or when the process stops for a reload (see reloading():
     * then nothing is ended, and the event `reload` is emitted).
     *
     * @return array{drain: array<string, mixed>|null, deregister: int}|null
     */
    public function stop(?string $wait = null): ?array
    {
        if ($this->reloading) {
            $this->emit('reload', $this->id . ($this->secretFile === null
                ? ' kept; no secret_file, so the next process is refused until it lapses'
                : ' kept for the next process'));
            return null;
        }
        if ($this->timerId !== null && class_exists('\Workerman\Timer')) {
            \Workerman\Timer::del($this->timerId);
            $this->timerId = null;
        }
        if ($this->secret === null) {
            return null;
        }
        $drain = $this->drain($wait);
        $status = $this->deregister();
        return ['drain' => $drain, 'deregister' => $status];
    }

    /**
     * One HTTP call to the admin API, bounded as a whole by `$timeout` (default `timeout`)
     * seconds. Returns [status, decoded JSON body or null]; status 0 when no answer came.
     *
     * @return array{0: int, 1: mixed}
     */
    private function call(string $method, string $tail, ?string $body = null, ?float $timeout = null): array
    {
        $deadline = microtime(true) + ($timeout ?? $this->timeout);
        $url = parse_url($this->admin);
        $tls = $url['scheme'] === 'https';
        $port = $url['port'] ?? ($tls ? 443 : 80);
        $path = ($url['path'] ?? '') . '/v1/upstreams/' . rawurlencode($this->upstream) . '/backends' . $tail;
        $body = $body ?? '';
        $headers = [
            "$method $path HTTP/1.1",
            'Host: ' . $url['host'] . (isset($url['port']) ? ':' . $url['port'] : ''),
            'Authorization: Bearer ' . $this->token,
            'Accept: application/json',
            'Connection: close',
            'Content-Length: ' . strlen($body),
        ];
        if ($this->secret !== null) {
            $headers[] = 'X-Registration-Secret: ' . $this->secret;
        }
        if ($body !== '') {
            $headers[] = 'Content-Type: application/json';
        }
        $request = implode("\r\n", $headers) . "\r\n\r\n" . $body;
        $context = stream_context_create(['ssl' => [
            'peer_name' => trim($url['host'], '[]'),
            'verify_peer' => true,
            'verify_peer_name' => true,
        ]]);

        // Warnings (connection refused, timeouts) would name the address only, never the
        // headers; they are silenced and reported as status 0 instead.
        set_error_handler(static function (): bool {
            return true;
        });
        try {
            $fp = stream_socket_client(
                ($tls ? 'tls://' : 'tcp://') . $url['host'] . ':' . $port,
                $errno,
                $errstr,
                max(0.001, $deadline - microtime(true)),
                STREAM_CLIENT_CONNECT,
                $context
            );
            if ($fp === false) {
                return [0, ['error' => 'cannot reach ' . $this->admin]];
            }
            $raw = self::exchange($fp, $request, $deadline);
            fclose($fp);
        } finally {
            restore_error_handler();
        }
        if ($raw === null) {
            return [0, ['error' => 'timed out']];
        }
        if ($raw === '') {
            return [0, ['error' => 'closed without an answer']];
        }
        $answer = self::parseAnswer($raw);
        if ($answer === null) {
            return [0, ['error' => 'malformed answer']];
        }
        [$status, $text] = $answer;
        $decoded = $text === '' ? null : json_decode($text, true);
        return [$status, $decoded];
    }

    /**
     * Send `$request` and read the answer, by `$deadline` (microtime): every write and read
     * waits at most for the time left. The raw answer, or null when the deadline passed.
     *
     * @param resource $fp
     */
    private static function exchange($fp, string $request, float $deadline): ?string
    {
        $waitLeft = static function () use ($fp, $deadline): bool {
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                return false;
            }
            stream_set_timeout($fp, (int)$left, (int)(($left - floor($left)) * 1e6));
            return true;
        };
        $timedOut = static function () use ($fp): bool {
            return !empty(stream_get_meta_data($fp)['timed_out']);
        };
        for ($sent = 0; $sent < strlen($request);) {
            if (!$waitLeft()) {
                return null;
            }
            $n = fwrite($fp, substr($request, $sent));
            if ($timedOut()) {
                return null;
            }
            if ($n === false || $n === 0) {
                return '';
            }
            $sent += $n;
        }
        $raw = '';
        while (!feof($fp) && !self::complete($raw)) {
            if (!$waitLeft()) {
                return null;
            }
            $chunk = fread($fp, 65536);
            if ($timedOut()) {
                return null;
            }
            if ($chunk === false) {
                break;
            }
            $raw .= $chunk;
        }
        return $raw;
    }

    /**
     * Has `$raw` a whole answer: all of a Content-Length, or a chunked body's last chunk
     * (without trailers)? Other answers end when tideway closes (the call sends
     * Connection: close).
     */
    private static function complete(string $raw): bool
    {
        $end = strpos($raw, "\r\n\r\n");
        if ($end === false) {
            return false;
        }
        $head = substr($raw, 0, $end + 2);
        if (preg_match('/\r\ncontent-length:\s*(\d+)\s*\r\n/i', $head, $m)) {
            return strlen($raw) - $end - 4 >= (int)$m[1];
        }
        return preg_match('/\r\ntransfer-encoding:[^\r]*chunked/i', $head) === 1
            && preg_match('/(^|\r\n)0\r\n\r\n$/', substr($raw, $end + 4)) === 1;
    }

    /**
     * The status and body of a raw HTTP/1.x answer (a chunked body decoded), or null when it
     * is not one.
     *
     * @return array{0: int, 1: string}|null
     */
    private static function parseAnswer(string $raw): ?array
    {
        $end = strpos($raw, "\r\n\r\n");
        if ($end === false || !preg_match('#^HTTP/1\.[01] (\d{3})#', $raw, $m)) {
            return null;
        }
        $head = substr($raw, 0, $end + 2);
        $body = substr($raw, $end + 4);
        if (preg_match('/\r\ncontent-length:\s*(\d+)\s*\r\n/i', $head, $len)) {
            $body = substr($body, 0, (int)$len[1]);
        } elseif (preg_match('/\r\ntransfer-encoding:[^\r]*chunked/i', $head)) {
            $decoded = '';
            while (preg_match('/^([0-9a-fA-F]+)[^\r]*\r\n/', $body, $size)) {
                $n = hexdec($size[1]);
                if ($n === 0) {
                    break;
                }
                $decoded .= substr($body, strlen($size[0]), $n);
                $body = substr($body, strlen($size[0]) + $n + 2);
            }
            $body = $decoded;
        }
        return [(int)$m[1], $body];
    }

    /** Write the secret to `secret_file`, readable by this user only. */
    private function keepSecret(): void
    {
        if ($this->secretFile === null || $this->secret === null) {
            return;
        }
        // A new file with an unguessable name ('x': never an existing file or a symlink's
        // target), created 0600 before anything is written, then renamed into place.
        $umask = umask(0077);
        $tmp = $this->secretFile . '.' . bin2hex(random_bytes(8)) . '.tmp';
        $fh = @fopen($tmp, 'x');
        umask($umask);
        $ok = $fh !== false
            && @chmod($tmp, 0600)
            && @fwrite($fh, $this->secret) === strlen($this->secret)
            && @fclose($fh)
            && @rename($tmp, $this->secretFile);
        if (!$ok) {
            if (is_resource($fh)) {
                @fclose($fh);
            }
            @unlink($tmp);
            $this->emit('secret_file_failed', $this->secretFile);
        }
    }

    /** @param mixed $answer */
    private function errorOf($answer): string
    {
        return is_array($answer) && isset($answer['error']) && is_string($answer['error'])
            ? $answer['error']
            : '';
    }

    private function emit(string $event, string $detail): void
    {
        if ($this->log !== null) {
            ($this->log)($event, $detail);
            return;
        }
        $line = 'tideway ' . $event . ' ' . $detail;
        if (defined('STDERR')) {
            fwrite(STDERR, $line . "\n");
        } else {
            error_log($line);
        }
    }

    /**
     * Seconds in a duration as tideway reads it ("30s", "500ms", "2m", "1h"), for the drain
     * call's read timeout; tideway's longest wait (1 h) when it is not that simple.
     */
    private static function seconds(string $d): float
    {
        if (!preg_match('/^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/', $d, $m)) {
            return 3600.0;
        }
        $n = (float)$m[1];
        switch ($m[2] ?? 's') {
            case 'ms':
                return $n / 1000;
            case 'm':
                return $n * 60;
            case 'h':
                return $n * 3600;
            default:
                return $n;
        }
    }
}
