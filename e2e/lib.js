// Shared by the e2e scripts: command-line options and step-by-step logging.

/** The value after `--name` in `args`, or `dflt`. */
exports.option = (args, name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}

/** Throws unless `cond` holds. */
exports.check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`)
}

/**
 * Named, timed steps. `step(name, fn)` runs fn, logs "ok"/"FAIL" with the time, and rethrows
 * failures; `run(main)` runs the script, printing the log and exiting 1 on failure.
 */
exports.steps = () => {
  const log = []
  async function step(name, fn) {
    const started = performance.now()
    try {
      const out = await fn()
      log.push(`ok   ${name} (${(performance.now() - started).toFixed(0)} ms)`)
      return out
    } catch (err) {
      log.push(`FAIL ${name}: ${err && err.error ? err.error + ': ' : ''}${err && err.message}`)
      throw err
    }
  }
  function run(main) {
    main()
      .then((summary) => {
        console.log(log.join('\n'))
        console.log(JSON.stringify({ ok: true, ...summary }))
      })
      .catch((err) => {
        console.log(log.join('\n'))
        console.error(err)
        process.exit(1)
      })
  }
  return { log, step, run }
}
