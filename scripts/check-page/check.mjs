// Opens the page of a running `maskdit serve`, picks digit 7, generates, waits for the images
// to appear in the gallery, checks the phone-sized layout and saves a screenshot.
// Usage: node check.mjs BASE_URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) throw new Error("usage: node check.mjs BASE_URL SCREENSHOT.png");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 780 } });
  page.on("pageerror", (e) => failures.push("script error: " + e.message));
  await page.goto(base + "/");
  await page.waitForSelector("#model option", { state: "attached" });
  await page.fill("#class", "7");
  await page.waitForFunction(() => document.querySelector("#chosen").textContent.startsWith("class 7"));
  await page.fill("#seed", "3");
  await page.fill("#count", "4");
  await page.click("#generate");
  // Progress shows while it runs; then the gallery's first card holds the four images.
  await page.waitForFunction(() => {
    const images = [...document.querySelectorAll("#gallery .card:first-child img")];
    return images.length === 4 && images.every((img) => img.complete && img.naturalWidth > 0);
  }, null, { timeout: 180000 });
  const settings = await page.textContent("#gallery .card:first-child .settings");
  if (!settings.includes("class 7") || !settings.includes("seeds 3–6")) failures.push("the card says: " + settings);
  const command = await page.textContent("#gallery .card:first-child code");
  if (!command.includes("--class 7 --seeds 3-6")) failures.push("the command says: " + command);
  await page.screenshot({ path: screenshot, fullPage: true });
  // On a phone-sized screen nothing runs off to the side.
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) failures.push("the page is " + overflow + " px wider than a phone's screen");
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("the page works: class 7 picked, four images generated and shown");
