set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row1.png.tmp.18585'
$m << EOD
0.114131 0.10455 0.144807 0.129366 0.128998 0.129802 0.149242 0.0991039
0.115809 0.151976 0.133272 0.140694 0.114844 0.102206 0.120106 0.121094
EOD
set title "Similarity-Aware V-MoE: load (last epoch, first seed)"
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
