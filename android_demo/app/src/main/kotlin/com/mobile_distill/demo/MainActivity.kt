package com.mobile_distill.demo

import android.app.Activity
import android.content.Intent
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Bundle
import android.provider.MediaStore
import android.view.View
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.TextView
import com.mobile_distill.core.Embedder
import com.mobile_distill.core.Orientation
import com.mobile_distill.core.Preprocess
import java.io.File

/**
 * Pick a photo (or take one), embed it with the student on the phone, show the gallery images it
 * is closest to. Started with the extra `mdistill.mode=benchmark` it runs the benchmark mode
 * of `mdistill bench --adb` instead and finishes.
 */
class MainActivity : Activity() {
    private var assets: Assets? = null
    private var embedder: Embedder? = null
    private var threads = THREADS
    private lateinit var status: TextView
    private lateinit var results: LinearLayout
    private lateinit var query: ImageView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        if (intent.getStringExtra(BenchmarkMode.EXTRA_MODE) == "benchmark") {
            runBenchmark()
            return
        }
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status) as TextView
        results = findViewById(R.id.results) as LinearLayout
        query = findViewById(R.id.query) as ImageView
        (findViewById(R.id.pick) as Button).setOnClickListener {
            startActivityForResult(Intent(Intent.ACTION_GET_CONTENT).setType("image/*"), REQUEST_PICK)
        }
        (findViewById(R.id.capture) as Button).setOnClickListener {
            startActivityForResult(Intent(MediaStore.ACTION_IMAGE_CAPTURE), REQUEST_CAPTURE)
        }
        try {
            val a = Assets(this)
            assets = a
            threads = intent.getIntExtra(BenchmarkMode.EXTRA_THREADS, THREADS)  // adb shell am start --ei mdistill.threads N
            embedder = LiteRtEmbedder(a.model(), threads)
            val by = if (a.gallery.embedding.isTeacher) "teacher-embedded (server index)" else "student-embedded"
            status.text = "${a.card.architecture}, ${a.gallery.items.size} $by gallery images, $threads thread(s)"
        } catch (e: Exception) {
            status.setText(R.string.no_assets)
        }
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK || data == null) return
        val bitmap: Bitmap? = when (requestCode) {
            REQUEST_PICK -> data.data?.let { uri -> contentResolver.openInputStream(uri)?.use { it.readBytes() } }?.let(::upright)
            REQUEST_CAPTURE -> data.extras?.get("data") as? Bitmap  // the camera app's thumbnail
            else -> null
        }
        if (bitmap != null) search(bitmap)
    }

    /** Decoded as the phone's gallery shows it: BitmapFactory ignores the EXIF orientation that
     *  the toolkit's loader (and so the gallery's embeddings) applied. */
    private fun upright(bytes: ByteArray): Bitmap? {
        val bitmap = BitmapFactory.decodeByteArray(bytes, 0, bytes.size) ?: return null
        val orientation = Orientation.fromJpeg(bytes)
        if (orientation == Orientation.NORMAL) return bitmap
        val w = bitmap.width
        val h = bitmap.height
        val turned = Orientation.upright(IntArray(w * h).also { bitmap.getPixels(it, 0, w, 0, 0, w, h) }, w, h, orientation)
        bitmap.recycle()
        return Bitmap.createBitmap(turned.argb, turned.width, turned.height, Bitmap.Config.ARGB_8888)
    }

    private fun search(bitmap: Bitmap) {
        val a = assets ?: return
        val e = embedder ?: return
        query.setImageBitmap(bitmap)
        status.text = "embedding…"
        Thread {
            val w = bitmap.width
            val h = bitmap.height
            val pixels = IntArray(w * h).also { bitmap.getPixels(it, 0, w, 0, 0, w, h) }
            val start = System.nanoTime()
            val input = Preprocess.toInput(Preprocess.resize(pixels, w, h, a.card.input.size), a.card.input)
            val embedding = e.embed(input)
            val ms = (System.nanoTime() - start) / 1e6
            val hits = a.gallery.search(embedding, TOP_K)
            runOnUiThread {
                status.text = String.format("%.1f ms (preprocess + inference, %d thread(s))", ms, threads)
                results.removeAllViews()
                for ((item, hit) in hits) {
                    val row = LinearLayout(this)
                    row.orientation = LinearLayout.HORIZONTAL
                    val thumb = ImageView(this)
                    thumb.setImageBitmap(a.open(item.image).use(BitmapFactory::decodeStream))
                    row.addView(thumb, LinearLayout.LayoutParams(160, 160))
                    val label = TextView(this)
                    label.text = String.format("  %s  (%.3f)", item.label, hit.score)
                    row.addView(label)
                    results.addView(row)
                }
                results.visibility = View.VISIBLE
            }
        }.start()
    }

    private fun runBenchmark() {
        val dir = File(intent.getStringExtra(BenchmarkMode.EXTRA_DIR) ?: File(getExternalFilesDir(null), "bench").path)
        val warmup = intent.getIntExtra(BenchmarkMode.EXTRA_WARMUP, 10)
        val runs = intent.getIntExtra(BenchmarkMode.EXTRA_RUNS, 100)
        val threads = intent.getIntExtra(BenchmarkMode.EXTRA_THREADS, THREADS)
        Thread {
            try {
                BenchmarkMode.run(dir, warmup, runs, threads)
            } catch (e: Exception) {
                File(dir, "error.txt").writeText(e.toString())
                File(dir, "done").writeText("")  // the host reads error.txt instead of waiting
            }
            runOnUiThread { finish() }
        }.start()
    }

    override fun onDestroy() {
        embedder?.close()
        super.onDestroy()
    }

    companion object {
        private const val REQUEST_PICK = 1
        private const val REQUEST_CAPTURE = 2
        private const val THREADS = 2
        private const val TOP_K = 8
    }
}
