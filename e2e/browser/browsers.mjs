// The browsers run.mjs drives, behind one small interface: Debian's chromium through
// playwright-core, and Debian's firefox-esr through puppeteer-core over WebDriver BiDi
// (playwright's own Firefox is a patched build that cannot be downloaded here; the
// stock ESR speaks BiDi, which puppeteer-core drives without downloading anything).
//
// Browsers.newPage(kind) returns a page with the part of playwright's Page API the
// scenarios use (goto, click, fill, check, isChecked, textContent, evaluate,
// screenshot, on(...)), whichever browser it is in. route() serves URLs under a prefix
// from a function, in both browsers (request interception).
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const KINDS = ['chromium', 'firefox'];

export class Browsers {
  // chromiumArgs: chromium's command line; firefoxPath: the firefox-esr executable;
  // insecure: accept the test certificates (https pages, wss and turns:).
  constructor({ chromiumPath, chromiumArgs, firefoxPath, insecure }) {
    this.opts = { chromiumPath, chromiumArgs, firefoxPath, insecure };
    this.routes = []; // [prefix, fulfil(url) -> {status, contentType, body}]
    this.chromium = null; // playwright BrowserContext
    this.firefox = null; // puppeteer Browser
    this.dirs = [];
  }

  async newPage(kind) {
    if (kind === 'firefox') return this.firefoxPage();
    if (kind !== 'chromium') throw new Error(`unknown browser ${JSON.stringify(kind)}: want ${KINDS.join(' or ')}`);
    return this.chromiumPage();
  }

  async chromiumPage() {
    if (!this.chromium) {
      const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-e2e-chromium-'));
      this.dirs.push(profile);
      this.chromium = await chromium.launchPersistentContext(profile, {
        executablePath: this.opts.chromiumPath,
        headless: true,
        args: this.opts.chromiumArgs,
        viewport: { width: 1000, height: 760 },
      });
      for (const [prefix, fulfil] of this.routes) await this.chromiumRoute(prefix, fulfil);
    }
    return this.chromium.newPage();
  }

  chromiumRoute(prefix, fulfil) {
    return this.chromium.route(prefix + '**', (route) => {
      const r = fulfil(route.request().url());
      return r ? route.fulfill(r) : route.continue();
    });
  }

  async firefoxPage() {
    if (!this.firefox) {
      this.firefox = await puppeteer.launch({
        browser: 'firefox',
        executablePath: this.opts.firefoxPath,
        headless: true,
        acceptInsecureCerts: this.opts.insecure,
        extraPrefsFirefox: {
          // Candidates on 127.0.0.1 (the relay addresses of a loopback relay) are
          // usable, and host addresses are not hidden behind mDNS names.
          'media.peerconnection.ice.loopback': true,
          'media.peerconnection.ice.obfuscate_host_addresses': false,
          // A page given by request interception talks to 127.0.0.1 like a real one.
          'network.lna.enabled': false,
        },
      });
    }
    const page = await this.firefox.newPage();
    await page.setViewport({ width: 1000, height: 760 });
    if (this.routes.length) {
      await page.setRequestInterception(true);
      page.on('request', (req) => {
        for (const [prefix, fulfil] of this.routes) {
          if (req.url().startsWith(prefix)) {
            const r = fulfil(req.url());
            if (r) return req.respond(r);
          }
        }
        return req.continue();
      });
    }
    return new PuppeteerPage(page);
  }

  async route(prefix, fulfil) {
    this.routes.push([prefix, fulfil]);
    if (this.chromium) await this.chromiumRoute(prefix, fulfil);
  }

  async close() {
    const errs = [];
    if (this.chromium) await this.chromium.close().catch((e) => errs.push(e));
    if (this.firefox) await this.firefox.close().catch((e) => errs.push(e));
    for (const d of this.dirs) fs.rmSync(d, { recursive: true, force: true });
    if (errs.length) throw errs[0];
  }
}

// PuppeteerPage gives a puppeteer page the playwright methods the scenarios call.
class PuppeteerPage {
  constructor(page) {
    this.page = page;
  }
  on(event, fn) {
    this.page.on(event, fn);
  }
  goto(url, { timeout } = {}) {
    return this.page.goto(url, { waitUntil: 'load', timeout });
  }
  evaluate(fn, arg) {
    return this.page.evaluate(fn, arg);
  }
  click(sel) {
    return this.page.click(sel);
  }
  fill(sel, value) {
    return this.page.locator(sel).fill(value);
  }
  isChecked(sel) {
    return this.page.$eval(sel, (e) => e.checked);
  }
  async check(sel) {
    if (!(await this.isChecked(sel))) await this.page.click(sel);
  }
  textContent(sel) {
    return this.page.$eval(sel, (e) => e.textContent);
  }
  screenshot(opts) {
    return this.page.screenshot(opts);
  }
}
