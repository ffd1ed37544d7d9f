set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_sweep_load_row4.png.tmp.24999'
$m << EOD
0.0877075 0.104492 0.136902 0.136963 0.126587 0.138977 0.111511 0.15686
0.125854 0.0983887 0.0996094 0.21521 0.277222 0.0463257 0.0517578 0.0856323
EOD
set title "Similarity-Aware, cosine τ=1: load (last epoch, first seed)"
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
