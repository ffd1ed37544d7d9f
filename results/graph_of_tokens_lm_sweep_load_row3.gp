set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_sweep_load_row3.png.tmp.24999'
$m << EOD
0.144958 0.0862427 0.141724 0.122681 0.129395 0.105774 0.175049 0.0941772
0.190369 0.121338 0.144287 0.141479 0.0942383 0.0913086 0.103333 0.113647
EOD
set title "Similarity-Aware, cosine τ=0.3: load (last epoch, first\nseed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
